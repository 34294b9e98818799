"""The Voila dashboard's logic (``fer_utils.dashboard``), its notebook executed headless, and the pieces of
``fer dashboard``, on real tiny bundles (random resnet18; tiny BLIP-2 + tiny CLIP for the fused one) and the
session's synthetic RAF-DB-layout data set. The real-browser test is in ``test_dashboard_browser.py``."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from matplotlib import cbook
from nbclient import NotebookClient
from PIL import Image

from fer_utils import dashboard as fd
from fer_utils.cli import main
from fer_utils.cli.dashboard import TEMPLATE, dashboard_environment, voila_command
from fer_utils.data import describe_dataset, load_dataset
from fer_utils.errors import DataError
from fer_utils.training.evaluate import evaluate
from fer_utils.inference.faces import NOTICE_NO_FACE, crop_face
from fer_utils.inference.fused_bundle import captioner_record, encoder_record, save_fused_bundle
from fer_utils.labels import EMOTIONS
from fer_utils.models import create_model
from fer_utils.models.heads.registry import create_head
from fer_utils.inference.bundle import list_bundles, save_bundle
from fer_utils.inference.predict import FusedPredictor, Predictor
from fer_utils.options import Preprocessing
from fer_utils.vlm import GenerationSettings, make_captioner, make_encoder
from fer_utils.vlm.prompts import PROMPTS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parent.parent
PREPROCESSING = Preprocessing(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
OTHER_DATA = {"name": "other-faces", "path": "/nowhere/other-faces", "source": "rafdb", "n_images": 99,
              "synthetic": False, "fingerprint": "fedcba9876543210"}
PHOTO = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
PROJECT_VARS = ("FER_DATA_DIR", "FER_RUNS_DIR", "FER_CACHE_DIR", "FER_BUNDLES_DIR", "FER_INSTANCE_DIR",
                fd.ENV_BUNDLE, fd.ENV_BUNDLES, fd.ENV_DATA)


# ---- fixtures ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def record(synthetic_rafdb) -> dict:
    return describe_dataset(synthetic_rafdb, load_dataset(synthetic_rafdb))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, record, one_torch_thread):
    """Under one folder: a CNN bundle of ``synthetic_rafdb`` (val 0.5), a CNN bundle of another data set
    (val 0.3) and a fused bundle of ``synthetic_rafdb`` (val 0.45) built on the first one."""
    root = tmp_path_factory.mktemp("dashboard-bundles")
    torch.manual_seed(0)
    cnn_model = create_model("resnet18").eval()
    cnn = save_bundle(root / "cnn" / "bundle", cnn_model, "resnet18", PREPROCESSING,
                      metrics={"val_macro_f1": 0.5, "macro_f1": 0.1}, data=record)
    other = save_bundle(root / "other" / "bundle", create_model("resnet18").eval(), "resnet18", PREPROCESSING,
                        metrics={"val_macro_f1": 0.3}, data=OTHER_DATA)
    captioner = make_captioner("tiny_blip2", seed=0, device="cpu")
    encoder = make_encoder("tiny_clip", device="cpu")
    head = create_head("gated", cnn_model.feature_dim, encoder.dim).eval()
    fused = save_fused_bundle(
        root / "fused" / "bundle", cnn_bundle=cnn, captioner=captioner_record("tiny_blip2", captioner, seed=0),
        prompt=PROMPTS["original"], settings=GenerationSettings(max_new_tokens=8, batch_size=2), postprocess=True,
        encoder=encoder_record("tiny_clip", encoder), head_name="gated", head=head, cnn_dim=cnn_model.feature_dim,
        text_dim=encoder.dim, fusion_norm="modality_l2", metrics={"val_macro_f1": 0.45}, data=record,
        provenance={"seed": 0})
    return SimpleNamespace(root=root, cnn=cnn, other=other, fused=fused)


@pytest.fixture(scope="module")
def cnn(bundles) -> Predictor:
    return fd.load_predictor(bundles.cnn)


@pytest.fixture(scope="module")
def fused(bundles) -> FusedPredictor:
    return fd.load_predictor(bundles.fused)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project folder of its own (``notebooks/study.yaml`` copied), so nothing touches the repo's data/."""
    root = tmp_path_factory.mktemp("dashboard-project")
    (root / "notebooks").mkdir()
    shutil.copy(REPO / "notebooks" / "study.yaml", root / "notebooks" / "study.yaml")
    return root


@pytest.fixture
def clean_env(monkeypatch, project):
    """The test process's environment (which a kernel inherits) pointing at the temporary project only."""
    for name in PROJECT_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FER_HOME", str(project))
    return monkeypatch


def copy_bundle(source: Path, target: Path, **changes) -> Path:
    """A copy of a CNN bundle with top-level manifest keys changed (its weights checksum stays valid)."""
    shutil.copytree(source, target)
    file = target / "bundle.json"
    manifest = json.loads(file.read_text(encoding="utf-8"))
    manifest.update(changes)
    file.write_text(json.dumps(manifest), encoding="utf-8")
    return target


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def png_image(data: bytes) -> Image.Image:
    assert isinstance(data, bytes) and data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG" and image.width > 50 and image.height > 50
    return image


# ---- bundle choice ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("exists", [False, True])
def test_no_bundle_gives_no_choice_and_says_how_to_make_one(tmp_path, synthetic_rafdb, exists):
    folder = tmp_path / "no-bundles"
    if exists:
        folder.mkdir()
    choices, preselected, message = fd.bundle_choices(fd.Settings(bundles=folder, data=synthetic_rafdb))
    assert choices == [] and preselected is None
    assert str(folder) in message
    for needed in ("make study", "fer study run", "fer dashboard --bundle"):
        assert needed in message


def test_choices_are_sorted_by_validation_f1_and_the_data_sets_best_is_preselected(bundles, synthetic_rafdb):
    choices, preselected, message = fd.bundle_choices(fd.Settings(bundles=bundles.root, data=synthetic_rafdb))
    assert [c.path for c in choices] == [str(bundles.cnn), str(bundles.fused), str(bundles.other)]
    assert [c.summary["val_macro_f1"] for c in choices] == [0.5, 0.45, 0.3]
    assert [c.label for c in choices] == ["resnet18 · val macro F1 0.500 · cnn/bundle",
                                          "fused:gated on resnet18 · val macro F1 0.450 · fused/bundle",
                                          "resnet18 · val macro F1 0.300 · other/bundle"]
    assert preselected == str(bundles.cnn) and message is None


def test_a_better_bundle_of_another_data_set_is_listed_first_but_not_preselected(bundles, synthetic_rafdb, tmp_path):
    root = tmp_path / "runs"
    mine = copy_bundle(bundles.cnn, root / "mine" / "bundle")
    theirs = copy_bundle(bundles.other, root / "theirs" / "bundle", metrics={"val_macro_f1": 0.9})
    choices, preselected, message = fd.bundle_choices(fd.Settings(bundles=root, data=synthetic_rafdb))
    assert [c.path for c in choices] == [str(theirs), str(mine)]
    assert preselected == str(mine) and message is None


def test_without_a_bundle_of_the_data_set_the_best_of_all_is_preselected_and_said(bundles, synthetic_rafdb,
                                                                                 tmp_path):
    root = tmp_path / "runs"
    low = copy_bundle(bundles.other, root / "low" / "bundle", metrics={"val_macro_f1": 0.2})
    high = copy_bundle(bundles.other, root / "high" / "bundle", metrics={"val_macro_f1": 0.7})
    choices, preselected, message = fd.bundle_choices(fd.Settings(bundles=root, data=synthetic_rafdb))
    assert [c.path for c in choices] == [str(high), str(low)] and preselected == str(high)
    assert message.startswith(f"No bundle trained on {synthetic_rafdb}") and "preselected the best" in message
    assert OTHER_DATA["fingerprint"] in message   # choose_bundle's reason: which data the bundles are of


def test_a_named_bundle_is_preselected_and_listed_once(bundles, synthetic_rafdb):
    settings = fd.Settings(bundles=bundles.root, data=synthetic_rafdb, bundle=bundles.other)
    choices, preselected, message = fd.bundle_choices(settings)
    assert preselected == str(bundles.other) and message is None
    assert [c.path for c in choices] == [str(bundles.cnn), str(bundles.fused), str(bundles.other)]


def test_a_named_bundle_outside_the_folder_is_added(bundles, synthetic_rafdb, tmp_path):
    elsewhere = copy_bundle(bundles.other, tmp_path / "elsewhere", metrics={"val_macro_f1": 0.35})
    settings = fd.Settings(bundles=bundles.root, data=synthetic_rafdb, bundle=elsewhere)
    choices, preselected, message = fd.bundle_choices(settings)
    assert preselected == str(elsewhere) and message is None
    assert [c.path for c in choices] == [str(bundles.cnn), str(bundles.fused), str(elsewhere), str(bundles.other)]
    assert choices[2].label == f"resnet18 · val macro F1 0.350 · {elsewhere}"   # not inside: the full path


def test_bundles_of_the_original_protocol_are_not_listed_unless_named(bundles, synthetic_rafdb, tmp_path):
    root = tmp_path / "runs"
    mine = copy_bundle(bundles.cnn, root / "mine" / "bundle")
    original = copy_bundle(bundles.cnn, root / "original" / "bundle", metrics={"val_macro_f1": 0.99},
                           provenance={"protocol": "original"})
    choices, preselected, _ = fd.bundle_choices(fd.Settings(bundles=root, data=synthetic_rafdb))
    assert [c.path for c in choices] == [str(mine)] and preselected == str(mine)
    _, skipped = list_bundles(root)
    assert len(skipped) == 1 and skipped[0].startswith(f"{original}: trained under the original study's protocol")

    choices, preselected, _ = fd.bundle_choices(fd.Settings(bundles=root, data=synthetic_rafdb, bundle=original))
    assert preselected == str(original) and [c.path for c in choices] == [str(original), str(mine)]

    # A folder holding only such bundles gives no choice, and the same message as an empty folder.
    shutil.rmtree(mine)
    choices, preselected, message = fd.bundle_choices(fd.Settings(bundles=root, data=synthetic_rafdb))
    assert choices == [] and preselected is None and message.startswith(f"No model bundle found under {root}")


def test_load_predictor_loads_each_bundle_once(bundles, cnn, fused):
    assert isinstance(cnn, Predictor) and not isinstance(cnn, FusedPredictor) and isinstance(fused, FusedPredictor)
    assert fd.load_predictor(bundles.cnn) is cnn
    assert fd.load_predictor(str(bundles.cnn / ".." / "bundle" / ".")) is cnn   # one key per folder, however named


# ---- one upload --------------------------------------------------------------------------------------------

def test_analyse_a_photo_with_a_cnn_bundle(cnn):
    analysis = fd.analyse(cnn, "grace_hopper.jpg", PHOTO.read_bytes())
    assert analysis.error is None and analysis.name == "grace_hopper.jpg"
    crop = crop_face(Image.open(PHOTO))
    assert crop.found and crop.crop_box is not None and analysis.face_notice is None
    assert analysis.face.size == crop.image.size and np.array_equal(np.asarray(analysis.face),
                                                                    np.asarray(crop.image))
    expected = cnn.predict_labeled([crop.image])[0]
    assert list(analysis.probabilities) == list(EMOTIONS)
    np.testing.assert_allclose(list(analysis.probabilities.values()), list(expected["probabilities"].values()),
                               rtol=0, atol=1e-6)
    assert analysis.label == max(analysis.probabilities, key=analysis.probabilities.get) == expected["label"]
    assert analysis.gradcam is not None and analysis.gradcam.label == analysis.label
    assert analysis.gradcam.heatmap.shape == (analysis.face.height, analysis.face.width)
    assert analysis.contribution is None and analysis.caption is None and analysis.vote is None
    assert 0 < analysis.seconds < 30


def test_analyse_a_photo_with_a_fused_bundle(fused):
    analysis = fd.analyse(fused, "grace_hopper.jpg", PHOTO.read_bytes())
    assert analysis.error is None and analysis.gradcam is None
    contribution = analysis.contribution
    assert contribution is not None
    assert isinstance(analysis.caption, str) and analysis.caption == contribution.caption
    assert analysis.vote == contribution.vote and (analysis.vote is None or analysis.vote in EMOTIONS)
    assert analysis.probabilities == dict(contribution.probabilities) and list(analysis.probabilities) == list(EMOTIONS)
    assert analysis.label == contribution.label == max(analysis.probabilities, key=analysis.probabilities.get)
    expected = fused.predict_labeled([crop_face(Image.open(PHOTO)).image])[0]
    assert expected["caption"] == analysis.caption and expected["label"] == analysis.label
    png_image(fd.probability_png(analysis.probabilities, contribution.without_text))


@pytest.mark.parametrize("name, data, says", [
    ("notes.png", b"these are my notes, not a photo\n", "notes.png is not an image"),
    ("empty.jpg", b"", "empty.jpg is empty"),
    ("C:\\photos\\scan.gif", encoded(Image.new("RGB", (8, 8)), "GIF"), "scan.gif is a GIF file"),
])
def test_a_bad_upload_gives_only_an_error_naming_the_file(cnn, name, data, says):
    analysis = fd.analyse(cnn, name, data)
    assert analysis.error is not None and analysis.error.startswith(says)
    assert analysis.face is None and analysis.label is None and analysis.probabilities == {}
    assert analysis.gradcam is None and analysis.contribution is None and analysis.face_notice is None


def test_an_image_without_a_face_is_predicted_whole_with_a_notice(cnn):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    analysis = fd.analyse(cnn, "noise.png", encoded(noise, "PNG"))
    assert analysis.error is None and analysis.face_notice == NOTICE_NO_FACE
    assert analysis.face.size == (120, 90) and analysis.label in EMOTIONS
    assert analysis.gradcam.heatmap.shape == (90, 120)


def test_probability_chart_is_a_png(cnn):
    probabilities = dict(zip(EMOTIONS, np.full(len(EMOTIONS), 1 / len(EMOTIONS))))
    png_image(fd.probability_png(probabilities))
    assert fd.class_name("happiness") == "happiness (행복)" and fd.class_name(None) == "—"


# ---- test split ----------------------------------------------------------------------------------------------

def test_split_results_are_the_studys_metrics_and_are_cached(cnn, synthetic_rafdb, tmp_path):
    index = load_dataset(synthetic_rafdb)
    test = index[index["split"] == "test"].reset_index(drop=True)
    proba = cnn.predict(list(test["path"]))
    expected = evaluate(test["label"].to_numpy(), proba)

    first = fd.split_results(cnn, synthetic_rafdb, tmp_path / "cache")
    assert not first.cached and first.metrics == expected and first.metrics["n"] == len(test) > 0
    frame = first.frame
    assert list(frame["id"]) == list(test["id"]) and list(frame["true"]) == [EMOTIONS[i] for i in test["label"]]
    np.testing.assert_allclose(frame[[f"p_{e}" for e in EMOTIONS]].to_numpy(), proba, atol=1e-5)
    assert list(frame["predicted"]) == [EMOTIONS[i] for i in proba.argmax(1)]
    assert list((tmp_path / "cache").rglob("*")), "nothing was cached"

    second = fd.split_results(cnn, synthetic_rafdb, tmp_path / "cache")
    assert second.cached and second.metrics == first.metrics
    pd.testing.assert_frame_equal(second.frame, first.frame)
    assert not fd.split_results(cnn, synthetic_rafdb, None).cached   # no cache folder: always computed


def test_split_results_of_a_bundle_of_another_data_set_say_which_it_needs(bundles, synthetic_rafdb, tmp_path):
    other = fd.load_predictor(bundles.other)
    with pytest.raises(DataError) as caught:
        fd.split_results(other, synthetic_rafdb, tmp_path / "cache")
    text = str(caught.value)
    for needed in (OTHER_DATA["name"], OTHER_DATA["fingerprint"], OTHER_DATA["path"], str(synthetic_rafdb),
                   "--data"):
        assert needed in text
    assert not (tmp_path / "cache").exists()


@pytest.fixture(scope="module")
def split(cnn, synthetic_rafdb):
    return fd.split_results(cnn, synthetic_rafdb, None)


def test_misclassified_holds_the_wrong_rows_most_confident_first(split):
    frame = split.frame
    wrong = fd.misclassified(split)
    assert len(wrong) == int((frame["true"] != frame["predicted"]).sum()) > 3
    assert (wrong["true"] != wrong["predicted"]).all()
    confidence = [row[f"p_{row['predicted']}"] for _, row in wrong.iterrows()]
    assert list(wrong["confidence"]) == confidence and confidence == sorted(confidence, reverse=True)
    true, predicted = wrong.iloc[0]["true"], wrong.iloc[0]["predicted"]
    by_true = fd.misclassified(split, true=true)
    assert len(by_true) and set(by_true["true"]) == {true} and (by_true["predicted"] != true).all()
    assert len(by_true) == ((frame["true"] == true) & (frame["predicted"] != true)).sum()
    by_predicted = fd.misclassified(split, predicted=predicted)
    assert len(by_predicted) and set(by_predicted["predicted"]) == {predicted}
    both = fd.misclassified(split, true=true, predicted=predicted)
    assert len(both) and set(zip(both["true"], both["predicted"])) == {(true, predicted)}
    none = fd.misclassified(split, true=true, predicted=true)
    assert none.empty and "confidence" in none.columns
    image = fd.open_test_image(next(wrong.itertuples()))
    assert isinstance(image, Image.Image) and image.width > 0


def test_split_figures_are_pngs(split):
    png_image(fd.confusion_png(split))
    png_image(fd.per_class_png(split))


# ---- what it was trained on, and where the dashboard looks --------------------------------------------------

def test_trained_on_says_synthetic_or_names_the_data_set(cnn, record):
    assert record["synthetic"] and "synthetic" in fd.trained_on(cnn.summary())
    real = {"name": "RAF-DB", "n_images": 15339, "fingerprint": "0011223344556677", "synthetic": False}
    text = fd.trained_on({"data": real})
    assert "synthetic" not in text and "RAF-DB" in text and "15339" in text and "0011223344556677" in text
    assert "an unnamed data set" in fd.trained_on({"data": None})


def test_settings_from_the_environment(project, tmp_path):
    env = {"FER_HOME": str(project), fd.ENV_BUNDLES: str(tmp_path / "b"), fd.ENV_DATA: str(tmp_path / "d"),
           fd.ENV_BUNDLE: str(tmp_path / "one")}
    assert fd.Settings.from_environment(env) == fd.Settings(bundles=tmp_path / "b", data=tmp_path / "d",
                                                            bundle=tmp_path / "one", cache=project / "data" / "cache")
    assert fd.Settings.from_environment({"FER_HOME": str(project), fd.ENV_BUNDLE: ""}) == fd.Settings(
        bundles=project / "data" / "runs", data=project / "data" / "synthetic", bundle=None,
        cache=project / "data" / "cache")
    env = {"FER_HOME": str(project), "FER_BUNDLES_DIR": str(tmp_path / "bundles"),
           "FER_CACHE_DIR": str(tmp_path / "cache")}
    settings = fd.Settings.from_environment(env)
    assert settings.bundles == tmp_path / "bundles" and settings.cache == tmp_path / "cache"


def test_settings_read_os_environ_by_default(clean_env, project, tmp_path):
    clean_env.setenv(fd.ENV_DATA, str(tmp_path / "data"))
    settings = fd.Settings.from_environment()
    assert settings.data == tmp_path / "data" and settings.bundles == project / "data" / "runs"


# ---- the notebook, executed headless ---------------------------------------------------------------------------

def execute_dashboard(cwd: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(fd.NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    errors = [output for cell in notebook.cells for output in cell.get("outputs", [])
              if output.get("output_type") == "error" or output.get("name") == "stderr"]
    assert not errors, errors
    return notebook


def widgets(notebook) -> dict[str, dict]:
    """The state of each widget that has one of the dashboard's ``fer-*`` classes, by that class."""
    state = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    found = {}
    for model in state.values():
        for name in model["state"].get("_dom_classes", []):
            if name.startswith("fer-"):
                found[name] = model["state"]
    return found


def test_the_notebook_runs_and_preselects_the_best_bundle(clean_env, bundles, synthetic_rafdb, project, tmp_path):
    clean_env.setenv(fd.ENV_BUNDLES, str(bundles.root))
    clean_env.setenv(fd.ENV_DATA, str(synthetic_rafdb))
    choices, preselected, _ = fd.bundle_choices(fd.Settings.from_environment())
    state = widgets(execute_dashboard(tmp_path))

    dropdown = state["fer-bundle"]
    assert dropdown["_options_labels"] == [c.label for c in choices]
    assert dropdown["_options_labels"][dropdown["index"]] == "resnet18 · val macro F1 0.500 · cnn/bundle"
    assert choices[dropdown["index"]].path == preselected == str(bundles.cnn)
    assert "synthetic" in state["fer-trained-on"]["value"] and state["fer-message"]["value"] == ""
    assert state["fer-upload"]["disabled"] is False
    macro_f1 = fd.split_results(fd.load_predictor(bundles.cnn), synthetic_rafdb, None).metrics["macro_f1"]
    assert f"<b>macro F1 {macro_f1:.3f}</b>" in state["fer-test-summary"]["value"]
    assert list((project / "data" / "cache" / fd.CACHE_NAMESPACE).rglob("*.npy")), \
        "the test results were not cached in the project's cache"
    assert not list(tmp_path.iterdir()), "the notebook wrote into its working folder"


def test_the_notebook_without_bundles_says_how_to_make_one(clean_env, synthetic_rafdb, tmp_path):
    empty = tmp_path / "no-bundles"
    empty.mkdir()
    clean_env.setenv(fd.ENV_BUNDLES, str(empty))
    clean_env.setenv(fd.ENV_DATA, str(synthetic_rafdb))
    run = tmp_path / "run"
    run.mkdir()
    state = widgets(execute_dashboard(run))
    message = state["fer-message"]["value"]
    assert "make study" in message and "fer study run" in message and "fer dashboard --bundle DIR" in message
    assert str(empty) in message
    assert state["fer-bundle"]["_options_labels"] == [] and state["fer-bundle"]["index"] is None
    assert state["fer-upload"]["disabled"] is True and state["fer-trained-on"]["value"] == ""


# ---- fer dashboard -----------------------------------------------------------------------------------------------

SHARE = fd.NOTEBOOK.parent / "share"


def test_voila_command_serves_the_packaged_notebook_on_127_0_0_1_with_the_fer_template():
    command = voila_command(8899)
    assert command[:4] == [sys.executable, "-m", "voila", str(fd.NOTEBOOK)] and fd.NOTEBOOK.is_file()
    for part in ("--port=8899", "--no-browser", "--Voila.ip=127.0.0.1", f"--template={TEMPLATE}"):
        assert part in command
    assert TEMPLATE == "fer" and not [p for p in command if "0.0.0.0" in p or "--ip" in p]
    assert voila_command(9000, Path("/x/other.ipynb"))[3] == "/x/other.ipynb"


def test_dashboard_environment(clean_env, project, tmp_path):
    clean_env.chdir(tmp_path)
    env = dashboard_environment(Path("runs"), Path("faces"), Path("one"),
                                env={"JUPYTER_PATH": "/some/where", "PATH": "/bin", "FER_HOME": str(project)})
    assert env["FER_HOME"] == str(project) and env["PATH"] == "/bin"
    assert env[fd.ENV_BUNDLES] == str(tmp_path / "runs") and env[fd.ENV_DATA] == str(tmp_path / "faces")
    assert env[fd.ENV_BUNDLE] == str(tmp_path / "one")
    assert env["JUPYTER_PATH"].split(os.pathsep) == [str(SHARE), "/some/where"]
    env = dashboard_environment(None, None, None, env={"FER_HOME": str(project)})
    assert env["JUPYTER_PATH"] == str(SHARE) and env["FER_HOME"] == str(project)
    assert not {fd.ENV_BUNDLES, fd.ENV_DATA, fd.ENV_BUNDLE} & set(env)
    assert fd.Settings.from_environment(env) == fd.Settings.from_environment({"FER_HOME": str(project)})


def test_relative_project_folders_reach_the_kernel_as_the_command_line_meant_them(clean_env, project):
    clean_env.chdir(project)
    clean_env.setenv("FER_CACHE_DIR", "cache-here")
    clean_env.setenv("FER_BUNDLES_DIR", "my-runs")
    env = dashboard_environment(None, None, None)
    clean_env.chdir(fd.NOTEBOOK.parent)   # where Voila starts the kernel (voila.handler: dirname(notebook))
    settings = fd.Settings.from_environment(env)
    assert (settings.cache, settings.bundles) == (project / "cache-here", project / "my-runs")


def test_fer_dashboard_runs_voila_with_that_environment(clean_env, bundles, synthetic_rafdb, monkeypatch):
    calls = []
    monkeypatch.setattr("fer_utils.cli.dashboard.subprocess.call", lambda cmd, env: calls.append((cmd, env)) or 0)
    res = CliRunner().invoke(main, ["dashboard", "--port", "8901", "--bundles", str(bundles.root),
                                    "--data", str(synthetic_rafdb), "--bundle", str(bundles.other)])
    assert res.exit_code == 0, res.output
    assert "http://127.0.0.1:8901/" in res.output
    [(command, env)] = calls
    assert command == voila_command(8901)
    assert env[fd.ENV_BUNDLES] == str(bundles.root) and env[fd.ENV_DATA] == str(synthetic_rafdb)
    assert env[fd.ENV_BUNDLE] == str(bundles.other)
    res = CliRunner().invoke(main, ["dashboard", "--bundle", str(bundles.root / "no-such-bundle")])
    assert res.exit_code == 2 and "does not exist" in res.output and len(calls) == 1


def test_the_fer_template_removes_every_cdn_link_of_voilas_lab_template():
    folder = SHARE / "voila" / "templates" / TEMPLATE
    assert json.loads((folder / "conf.json").read_text(encoding="utf-8")) == {"base_template": "lab"}
    ours = (folder / "index.html.j2").read_text(encoding="utf-8")
    assert "{%- extends 'lab/index.html.j2' -%}" in ours
    removed = re.findall(r"replace\('(<link [^']*)', ''\)", ours)
    from jupyter_core.paths import jupyter_path

    lab = next(Path(p) / "index.html.j2" for p in jupyter_path("voila", "templates", "lab")
               if (Path(p) / "index.html.j2").is_file())
    links = re.findall(r'<link [^>]*href="https?://[^>]*>', lab.read_text(encoding="utf-8"))
    assert links, f"{lab}: no CDN link any more (the template's replaces can go)"
    assert sorted(removed) == sorted(links), f"{lab} links {links}; the fer template removes {removed}"


@pytest.mark.parametrize("port", ["99999", "0", "-5"])
def test_fer_dashboard_refuses_an_impossible_port_before_starting(port, monkeypatch):
    monkeypatch.setattr("fer_utils.cli.dashboard.subprocess.call", lambda *a, **k: pytest.fail("voila started"))
    res = CliRunner().invoke(main, ["dashboard", "--port", port])
    assert res.exit_code == 2 and "Invalid value for '--port'" in res.output and "dashboard on" not in res.output
