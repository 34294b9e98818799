import pytest

from fer_utils import labels


def test_rafdb_order_and_korean_names():
    assert labels.EMOTIONS == ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
    assert labels.EMOTIONS_KO == ("놀람", "두려움", "혐오", "행복", "슬픔", "분노", "중립")
    assert [labels.rafdb_to_index(i) for i in range(1, 8)] == list(range(7))
    assert labels.index_to_rafdb(0) == 1


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


def test_index_of_names_aliases_korean():
    assert labels.index_of("Happy") == 3
    assert labels.index_of("놀람") == 0
    assert labels.index_of(6) == 6
    with pytest.raises(ValueError, match="unknown class 'contempt'"):
        labels.index_of("contempt")


def test_original_web_app_labels_disagree_with_model_order():
    # flaw 7 of the original study: index 0 is surprise for the model, happiness in the app
    assert labels.ORIGINAL_WEB_APP_LABELS_KO[0] != labels.EMOTIONS_KO[0]
    assert "불안" not in labels.EMOTIONS_KO
