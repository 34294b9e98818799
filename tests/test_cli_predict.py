"""`fer predict` on hostile and messy input: strict JSON out, bad images reported one by one."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from fer_utils.cli import main
from fer_utils.labels import EMOTIONS
from fer_utils.models import create_model
from fer_utils.inference.bundle import save_bundle
from fer_utils.options import Preprocessing

DATA = {"name": "s", "fingerprint": "f", "synthetic": True}


def strict_json(text: str):
    """Parse ``text`` as standard JSON: NaN / Infinity (which json.loads accepts) fail."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def make_model(nan: bool = False):
    torch.manual_seed(0)
    model = create_model("resnet18")
    if nan:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
    return model


def make_bundle(folder, nan: bool = False):
    return save_bundle(folder, make_model(nan), "resnet18", Preprocessing.preset(32, "half"),
                       metrics={"val_macro_f1": 0.5}, data=DATA)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("cli") / "bundle")


def face(path, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


def predict(*args):
    return CliRunner().invoke(main, ["predict", *map(str, args)])


def test_a_tampered_bundle_gives_an_error_not_nan_probabilities(tmp_path):
    from safetensors.torch import save_file

    folder = make_bundle(tmp_path / "b")
    save_file({k: v.contiguous() for k, v in make_model(nan=True).state_dict().items()},
              folder / "model.safetensors")  # modified weights, and the checksum removed:
    manifest = json.loads((folder / "bundle.json").read_text(encoding="utf-8"))
    del manifest["weights_sha256"]
    (folder / "bundle.json").write_text(json.dumps(manifest), encoding="utf-8")
    res = predict(face(tmp_path / "a.png"), "--bundle", folder)
    assert res.exit_code == 2 and res.stdout == ""
    assert f"{folder / 'bundle.json'}: missing key(s) weights_sha256" in res.stderr


def test_non_finite_outputs_are_an_error_naming_the_bundle(tmp_path):
    folder = make_bundle(tmp_path / "nan", nan=True)
    res = predict(face(tmp_path / "a.png"), "--bundle", folder)
    assert res.exit_code == 2 and "NaN" not in res.stdout
    assert f"{folder}: the model gives non-finite probabilities" in res.stderr


def test_one_bad_image_among_many_is_reported_and_the_rest_answered(tmp_path, bundle):
    good = [face(tmp_path / f"good{i}.png", i) for i in range(3)]
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    missing = tmp_path / "missing.jpg"
    images = [good[0], corrupt, good[1], missing, good[2]]
    res = predict(*images, "--bundle", bundle)
    assert res.exit_code == 1
    out = strict_json(res.stdout)["predictions"]
    assert [p["image"] for p in out] == list(map(str, images))
    assert out[1] == {"image": str(corrupt), "error": out[1]["error"]}
    assert out[1]["error"].startswith(f"{corrupt}: unreadable or corrupt image")
    assert out[3] == {"image": str(missing), "error": f"{missing}: image file missing"}
    for p in (out[0], out[2], out[4]):
        assert list(p["probabilities"]) == list(EMOTIONS) and p["label"] in EMOTIONS
    alone = strict_json(predict(good[1], "--bundle", bundle).stdout)["predictions"][0]
    assert alone["probabilities"] == pytest.approx(out[2]["probabilities"], abs=1e-6)
    assert "2 of 5 images could not be read" in res.stderr


def test_all_good_images_exit_0_with_strict_json(tmp_path, bundle):
    res = predict(face(tmp_path / "a.png"), face(tmp_path / "b.png", 1), "--bundle", bundle)
    assert res.exit_code == 0 and res.stderr == ""
    out = strict_json(res.stdout)
    assert [p["image"] for p in out["predictions"]] == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]


def test_non_utf8_file_names_give_valid_json(tmp_path, bundle):
    good = face(tmp_path / os.fsdecode(b"caf\xe9-\xff.png"))   # Latin-1 bytes: not UTF-8
    bad = tmp_path / os.fsdecode(b"bad\xff.jpg")
    bad.write_bytes(b"junk")
    assert good.is_file() and "\udcff" in str(good)
    alone = predict(good, "--bundle", bundle)
    assert alone.exit_code == 0, alone.output
    assert strict_json(alone.stdout)["predictions"][0]["image"] == str(tmp_path / "caf\\xe9-\\xff.png")
    res = predict(good, bad, tmp_path / "ok-정상.png", "--bundle", bundle)
    assert res.exit_code == 1
    out = strict_json(res.stdout)["predictions"]
    assert out[0]["image"] == str(tmp_path / "caf\\xe9-\\xff.png") and "probabilities" in out[0]
    assert out[1]["image"] == str(tmp_path / "bad\\xff.jpg")
    assert out[1]["error"].startswith(f"{tmp_path / 'bad'}\\xff.jpg: unreadable or corrupt image")
    korean = tmp_path / "ok-정상.png"   # valid UTF-8 names print as they are
    assert out[2] == {"image": str(korean), "error": f"{korean}: image file missing"}


def test_tiny_image_is_answered_with_a_warning(tmp_path, bundle):
    dot = tmp_path / "dot.png"
    Image.new("RGB", (1, 1)).save(dot)
    res = predict(dot, "--bundle", bundle)
    assert res.exit_code == 0 and "probabilities" in strict_json(res.stdout)["predictions"][0]
    assert f"{dot}: 1x1 pixels is smaller than 16 on a side" in res.stderr


def test_crop_face_reports_the_face_and_predicts_on_its_crop(tmp_path, bundle):
    from matplotlib.cbook import get_sample_data

    from fer_utils.inference.faces import NOTICE_NO_FACE, crop_face
    from fer_utils.inference.predict import Predictor

    grace = get_sample_data("grace_hopper.jpg", asfileobj=False)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    noise, dot = face(tmp_path / "noise.png"), tmp_path / "dot.png"
    Image.new("RGB", (8, 8)).save(dot)
    res = predict(grace, corrupt, noise, dot, "--bundle", bundle, "--crop-face")
    assert res.exit_code == 1
    out = strict_json(res.stdout)["predictions"]
    assert [p["image"] for p in out] == [str(grace), str(corrupt), str(noise), str(dot)]
    expected = crop_face(Image.open(grace))
    assert out[0]["face"] == {"box": list(expected.box), "crop_box": list(expected.crop_box), "notice": None}
    x, y, w, h = out[0]["face"]["box"]
    assert 190 <= w <= 260 and 230 <= x + w / 2 <= 300 and 180 <= y + h / 2 <= 250
    on_crop = Predictor.from_bundle(bundle).predict_labeled([expected.image])[0]
    assert out[0]["probabilities"] == pytest.approx(on_crop["probabilities"], abs=1e-6)   # the crop was predicted
    assert out[1] == {"image": str(corrupt), "error": out[1]["error"]}
    assert out[1]["error"].startswith(f"{corrupt}: unreadable or corrupt image")
    for p in out[2:]:
        assert p["face"] == {"box": None, "crop_box": None, "notice": NOTICE_NO_FACE}
        assert list(p["probabilities"]) == list(EMOTIONS)
    assert f"warning: {dot} (face crop): 8x8 pixels is smaller than 16 on a side" in res.stderr
    assert "in memory" not in res.stderr and "1 of 4 images could not be read" in res.stderr
    plain = strict_json(predict(grace, "--bundle", bundle).stdout)["predictions"][0]
    assert "face" not in plain and plain["probabilities"] != pytest.approx(on_crop["probabilities"], abs=1e-6)


def test_a_bundle_path_that_does_not_exist_is_named_so(tmp_path):
    res = predict(face(tmp_path / "a.png"), "--bundle", tmp_path / "nonexistent")
    assert res.exit_code == 2 and res.stdout == ""
    assert "does not exist" in res.stderr and "manifest missing" not in res.stderr
