"""The 7 classes: RAF-DB's order inside, other data sets' labels mapped on load, Korean names per class."""
import pytest
from datafixtures import make_fer2013, make_rafdb, pixel_text

from fer_utils import labels
from fer_utils.data import load_fer2013, load_rafdb

KOREAN = {"surprise": "놀람", "fear": "두려움", "disgust": "혐오", "happiness": "행복", "sadness": "슬픔",
          "anger": "분노", "neutral": "중립"}


def names(index) -> list[str]:
    return [labels.EMOTIONS[label] for label in index["label"]]


def test_rafdb_order():
    assert labels.EMOTIONS == ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
    assert [labels.rafdb_to_index(i) for i in range(1, 8)] == list(range(7))
    assert labels.index_to_rafdb(0) == 1


def test_rafdb_rows_load_as_the_class_their_label_names(tmp_path):
    make_rafdb(tmp_path, lines=[(f"train_{i:05d}.jpg", label) for i, label in enumerate([6, 1, 4, 7, 2, 5, 3], 1)])
    assert names(load_rafdb(tmp_path)) == ["anger", "surprise", "happiness", "neutral", "fear", "sadness", "disgust"]


@pytest.mark.parametrize("bad", [0, 8, -1, 2.5, True])
def test_rafdb_label_out_of_range(bad):
    with pytest.raises(ValueError, match="1..7"):
        labels.rafdb_to_index(bad)


def test_fer2013_mapping_follows_names():
    # FER2013: 0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral
    expected = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
    assert [labels.EMOTIONS[labels.fer2013_to_index(i)] for i in range(7)] == expected
    with pytest.raises(ValueError):
        labels.fer2013_to_index(7)


@pytest.mark.parametrize("header", ["fer2013", "icml"])
def test_fer2013_rows_load_as_the_class_their_number_names(tmp_path, header):
    rows = [(str(n), "Training", pixel_text(n)) for n in (5, 0, 3, 6, 1, 4, 2)]
    index = load_fer2013(make_fer2013(tmp_path / "fer.csv", rows, header))
    assert names(index) == ["surprise", "anger", "happiness", "neutral", "disgust", "sadness", "fear"]


@pytest.mark.parametrize("english, korean", KOREAN.items())
def test_korean_name_of_each_class(english, korean):
    index = labels.index_of(english)
    assert labels.EMOTIONS_KO[index] == korean
    assert labels.index_of(korean) == index
    assert labels.index_to_rafdb(korean) == index + 1


def test_index_of_names_aliases_korean():
    assert labels.index_of("Happy") == 3
    assert labels.index_of("놀람") == 0
    assert labels.index_of(6) == 6
    with pytest.raises(ValueError, match="unknown class 'contempt'"):
        labels.index_of("contempt")


def test_original_web_app_named_every_prediction_wrongly():
    # flaw 7 of the original study: the app read the model's output index through its own list
    for index, shown in enumerate(labels.ORIGINAL_WEB_APP_LABELS_KO[:-1]):
        assert labels.index_of(shown) != index, f"{labels.EMOTIONS[index]} shown as {shown}"
    assert labels.index_of(labels.ORIGINAL_WEB_APP_LABELS_KO[labels.index_of("surprise")]) == labels.index_of("happiness")
    with pytest.raises(ValueError, match="unknown class '불안'"):       # anxiety: no class of the model
        labels.index_of(labels.ORIGINAL_WEB_APP_LABELS_KO[-1])
