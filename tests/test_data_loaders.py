"""Loaders of RAF-DB, FER2013 and image folders; format detection; image opening; FERDataset."""
from __future__ import annotations

import bz2
import csv
import gzip
import os
import pickle
import unicodedata

import numpy as np
import pytest
import torch
from datafixtures import class_colour, make_fer2013, make_imagefolder, make_rafdb, pixel_text, rafdb_lines, write_image
from PIL import Image

from fer_utils.data import INDEX_COLUMNS, detect_format, load_dataset, load_fer2013, load_imagefolder, load_rafdb, open_image
from fer_utils.data.dataset import FERDataset
from fer_utils.data.tensor_transforms import BatchTransform
from fer_utils.errors import ConfigError, DataError
from fer_utils.labels import EMOTIONS, EMOTIONS_KO, index_of
from fer_utils.options import Preprocessing

P32 = Preprocessing.preset(32, "half")

LABEL_FILE = "list_patition_label.txt"


# --- RAF-DB ---------------------------------------------------------------------------------

@pytest.mark.parametrize("variant, suffix", [("aligned", "_aligned.jpg"), ("original", ".jpg")])
def test_load_rafdb_variants(tmp_path, variant, suffix):
    make_rafdb(tmp_path)
    index = load_rafdb(tmp_path, variant=variant)
    assert tuple(index.columns) == INDEX_COLUMNS
    assert len(index) == 21 and index["id"].is_unique
    assert (index["split"] == "train").sum() == 14 and (index["split"] == "test").sum() == 7
    first = index.iloc[0]
    assert first["id"] == "train_00001" and first["label"] == 0  # RAF-DB label 1 = surprise
    assert first["path"].endswith(os.path.join("Image", variant, "train_00001" + suffix))
    assert os.path.isabs(first["path"]) and first["pixels"] is None and first["source"] == "rafdb"
    assert index["label"].tolist() == [label - 1 for _, label in rafdb_lines()]
    assert open_image(first).getpixel((0, 0)) == pytest.approx(class_colour(0), abs=8)


def test_load_rafdb_accepts_basic_folder_itself(tmp_path):
    make_rafdb(tmp_path)
    assert load_rafdb(tmp_path / "basic")["id"].tolist() == load_rafdb(tmp_path)["id"].tolist()


def test_load_rafdb_unknown_variant(tmp_path):
    make_rafdb(tmp_path)
    with pytest.raises(ConfigError, match="aligned, original"):
        load_rafdb(tmp_path, variant="cropped")


@pytest.mark.parametrize("bad_line, expected", [
    ("train_00099.jpg\n", "malformed line"),
    ("train_00099.jpg 3 extra\n", "malformed line"),
    ("train_00099.jpg x\n", "not an integer 1..7"),
    ("train_00099.jpg 0\n", "'0' of train_00099.jpg is not an integer 1..7"),
    ("train_00099.jpg 8\n", "'8' of train_00099.jpg is not an integer 1..7"),
    ("val_00001.jpg 3\n", "does not start with train_ or test_"),
    ("train_00001.jpg 3\n", "listed twice (first at line 1)"),
    ("train_00099.jpg +4\n", "'+4' of train_00099.jpg is not an integer 1..7"),      # int() takes both
    ("train_00099.jpg \uff14\n", "'\uff14' of train_00099.jpg is not an integer 1..7"),  # full-width 4
    ("train_../../etc/x.jpg 3\n", "'train_../../etc/x.jpg' is not a plain file name"),
    ("train_sub\\x.jpg 3\n", "is not a plain file name"),
    ("train_00099\x07.jpg 3\n", "is not a plain file name"),
])
def test_load_rafdb_bad_line_names_file_and_line(tmp_path, bad_line, expected):
    make_rafdb(tmp_path, extra_text=bad_line)
    with pytest.raises(DataError) as info:
        load_rafdb(tmp_path)
    message = str(info.value)
    assert f"{LABEL_FILE}:22:" in message and expected in message


def test_load_rafdb_label_file_with_byte_order_mark(tmp_path):
    """Windows editors save UTF-8 with a BOM: it is not part of the first image name."""
    make_rafdb(tmp_path)
    label_file = tmp_path / "basic" / "EmoLabel" / LABEL_FILE
    label_file.write_bytes(b"\xef\xbb\xbf" + label_file.read_bytes())
    index = load_rafdb(tmp_path)
    assert len(index) == 21 and index["id"].iloc[0] == "train_00001" and index["label"].iloc[0] == 0


def test_load_rafdb_label_file_not_utf8_names_the_line(tmp_path):
    make_rafdb(tmp_path)
    label_file = tmp_path / "basic" / "EmoLabel" / LABEL_FILE
    label_file.write_bytes(label_file.read_bytes() + "train_00099.jpg 3 \xe9t\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=f"{LABEL_FILE}:22: not UTF-8 text: byte 0xe9"):
        load_rafdb(tmp_path)


def test_load_rafdb_empty_label_file_is_an_error(tmp_path):
    make_rafdb(tmp_path)
    (tmp_path / "basic" / "EmoLabel" / LABEL_FILE).write_text("\n \n")
    with pytest.raises(DataError, match=f"{LABEL_FILE}: the label file lists no images"):
        load_rafdb(tmp_path)


def test_load_rafdb_missing_label_file(tmp_path):
    make_rafdb(tmp_path)
    (tmp_path / "basic" / "EmoLabel" / LABEL_FILE).unlink()
    with pytest.raises(DataError, match=f"EmoLabel/{LABEL_FILE}: wrong layout"):
        load_rafdb(tmp_path)


def test_load_rafdb_missing_image_folder(tmp_path):
    make_rafdb(tmp_path)
    (tmp_path / "basic" / "Image" / "aligned").rename(tmp_path / "basic" / "Image" / "elsewhere")
    with pytest.raises(DataError, match="Image/aligned: wrong layout"):
        load_rafdb(tmp_path)


def test_load_rafdb_missing_images_named_with_count(tmp_path):
    make_rafdb(tmp_path)
    aligned = tmp_path / "basic" / "Image" / "aligned"
    for i in range(1, 8):
        (aligned / f"train_{i:05d}_aligned.jpg").unlink()
    with pytest.raises(DataError) as info:
        load_rafdb(tmp_path)
    message = str(info.value)
    assert message.startswith("7 image file(s) missing")
    assert "train_00001_aligned.jpg" in message and f"{LABEL_FILE}:1)" in message
    assert "train_00006_aligned.jpg" not in message and "and 2 more" in message


# --- FER2013 --------------------------------------------------------------------------------

@pytest.mark.parametrize("header", ["fer2013", "icml"])
def test_load_fer2013_both_headers(tmp_path, header):
    rows = [("0", "Training", pixel_text(0)), ("5", "PublicTest", pixel_text(1)), ("3", "PrivateTest", pixel_text(2))]
    index = load_fer2013(make_fer2013(tmp_path / "fer.csv", rows, header))
    assert tuple(index.columns) == INDEX_COLUMNS
    assert index["id"].tolist() == ["fer2013_00000", "fer2013_00001", "fer2013_00002"]
    # FER2013 0 = Angry -> our "anger" (5); 5 = Surprise -> "surprise" (0); 3 = Happy -> "happiness"
    assert index["label"].tolist() == [index_of("anger"), index_of("surprise"), index_of("happiness")]
    assert index["label"].tolist() == [5, 0, 3]
    assert index["split"].tolist() == ["train", "val", "test"]
    pixels = index["pixels"].iloc[1]
    assert pixels.shape == (48, 48) and pixels.dtype == np.uint8 and pixels[0, 0] == 1 and pixels[0, 1] == 2
    assert index["path"].isna().all() and (index["source"] == "fer2013").all()
    image = open_image(index.iloc[1])
    assert image.mode == "RGB" and image.size == (48, 48) and image.getpixel((1, 0)) == (2, 2, 2)


@pytest.mark.parametrize("row, expected", [
    (("0", "Training", pixel_text(count=2303)), "2303 pixel values, expected 2304"),
    (("0", "Training", pixel_text(count=2303) + " x"), "not all integers"),
    (("0", "Training", pixel_text(count=2303) + " 256"), "outside 0..255"),
    (("7", "Training", pixel_text()), "emotion '7' is not an integer 0..6"),
    (("x", "Training", pixel_text()), "emotion 'x' is not an integer 0..6"),
    (("0", "Validation", pixel_text()), "Usage 'Validation' is not one of"),
    (("+3", "Training", pixel_text()), "emotion '+3' is not an integer 0..6"),
    (("\uff13", "Training", pixel_text()), "emotion '\uff13' is not an integer 0..6"),  # full-width 3
])
def test_load_fer2013_bad_row_names_file_and_line(tmp_path, row, expected):
    csv_path = make_fer2013(tmp_path / "fer2013.csv", [("1", "Training", pixel_text()), row])
    with pytest.raises(DataError) as info:
        load_fer2013(csv_path)
    assert "fer2013.csv:3:" in str(info.value) and expected in str(info.value)


def test_load_fer2013_wrong_field_count_and_header(tmp_path):
    csv_path = tmp_path / "fer2013.csv"
    csv_path.write_text(f"emotion,pixels,Usage\n0,{pixel_text()}\n")
    with pytest.raises(DataError, match="fer2013.csv:2: 2 fields, expected 3"):
        load_fer2013(csv_path)
    csv_path.write_text(f"label,pixels\n0,{pixel_text()}\n")
    with pytest.raises(DataError, match="fer2013.csv:1: header 'label,pixels' is not a FER2013 header"):
        load_fer2013(csv_path)


def test_load_fer2013_byte_order_mark(tmp_path):
    csv_path = make_fer2013(tmp_path / "fer2013.csv", [("3", "Training", pixel_text())])
    csv_path.write_bytes(b"\xef\xbb\xbf" + csv_path.read_bytes())
    assert load_fer2013(csv_path)["label"].tolist() == [index_of("happiness")]


def test_load_fer2013_non_utf8_byte_names_file_and_line(tmp_path):
    rows = [("1", "Training", pixel_text()), ("2", "Training\xff", pixel_text())]
    csv_path = make_fer2013(tmp_path / "fer2013.csv", rows)
    csv_path.write_bytes(csv_path.read_bytes().replace("\xff".encode("utf-8"), b"\xff"))
    with pytest.raises(DataError, match="fer2013.csv:3: not UTF-8 text: byte 0xff"):
        load_fer2013(csv_path)


@pytest.mark.parametrize("compress, kind", [(gzip.compress, "gzip"), (bz2.compress, "bzip2")])
def test_load_fer2013_compressed_file_named_csv(tmp_path, compress, kind):
    csv_path = make_fer2013(tmp_path / "fer2013.csv", [("1", "Training", pixel_text())])
    csv_path.write_bytes(compress(csv_path.read_bytes()))
    with pytest.raises(DataError, match=f"fer2013.csv:1: a {kind}-compressed file, not CSV text; decompress it first"):
        load_fer2013(csv_path)


def test_load_fer2013_field_over_the_csv_limit_names_file_and_line(tmp_path):
    huge = "1 " * 70_000  # 140,000 characters: over the csv module's 131,072 (a real pixel field has <= 9,215)
    csv_path = make_fer2013(tmp_path / "fer2013.csv", [("1", "Training", pixel_text()), ("2", "Training", huge)])
    limit = csv.field_size_limit()
    expected = r"fer2013.csv:3: unreadable CSV row: field larger than field limit \(131072\); .* at most 9,215"
    with pytest.raises(DataError, match=expected):
        load_fer2013(csv_path)
    assert csv.field_size_limit() == limit  # the process-wide limit is left alone


@pytest.mark.parametrize("text, expected", [
    ("", "fer2013.csv: the file is empty: expected the header emotion,pixels,Usage"),
    ("emotion,pixels,Usage\n\n", "fer2013.csv: no data rows after the header"),
])
def test_load_fer2013_empty_is_an_error(tmp_path, text, expected):
    csv_path = tmp_path / "fer2013.csv"
    csv_path.write_text(text)
    with pytest.raises(DataError, match=expected):
        load_fer2013(csv_path)


# --- image folders --------------------------------------------------------------------------

def test_load_imagefolder_split_layout(tmp_path):
    make_imagefolder(tmp_path, {"train/happy": 3, "train/Sad": 2, "val/neutral": 1, "test/anger": 2})
    (tmp_path / "train" / "happy" / "notes.txt").write_text("not an image")
    index = load_imagefolder(tmp_path)
    assert len(index) == 8 and (index["source"] == "imagefolder").all()
    assert index["id"].tolist()[:3] == ["test/anger/000.png", "test/anger/001.png", "train/Sad/000.png"]
    counts = index.groupby(["split", "label"]).size().to_dict()
    assert counts == {("test", index_of("anger")): 2, ("train", index_of("happiness")): 3,
                      ("train", index_of("sadness")): 2, ("val", index_of("neutral")): 1}


def test_load_imagefolder_class_layout_korean_and_aliases(tmp_path):
    decomposed = unicodedata.normalize("NFD", EMOTIONS_KO[1])  # as macOS writes Hangul names
    make_imagefolder(tmp_path, {EMOTIONS_KO[3]: 2, decomposed: 1, "angry": 1, "Surprise": 1})
    index = load_imagefolder(tmp_path)
    assert (index["split"] == "train").all() and len(index) == 5
    assert sorted(index["label"]) == sorted([3, 3, 1, index_of("anger"), 0])


def test_load_imagefolder_unknown_class_folder(tmp_path):
    make_imagefolder(tmp_path, {"train/happy": 1, "train/bored": 1})
    with pytest.raises(DataError) as info:
        load_imagefolder(tmp_path)
    message = str(info.value)
    assert "train/bored: unknown class folder 'bored'" in message
    assert all(name in message for name in EMOTIONS) and EMOTIONS_KO[0] in message


def test_load_imagefolder_unknown_folder_beside_splits(tmp_path):
    make_imagefolder(tmp_path, {"train/happy": 1, "extra/happy": 1})
    with pytest.raises(DataError, match="extra: folder 'extra' beside split folders is not a split"):
        load_imagefolder(tmp_path)


# --- format detection -----------------------------------------------------------------------

def test_load_dataset_detects_every_format(tmp_path):
    make_rafdb(tmp_path / "raf")
    make_imagefolder(tmp_path / "folders", {"happy": 1, "sad": 1})
    csv_path = make_fer2013(tmp_path / "icml_face_data.csv", [("3", "Training", pixel_text())], "icml")
    assert detect_format(tmp_path / "raf") == detect_format(tmp_path / "raf" / "basic") == "rafdb"
    assert detect_format(csv_path) == "fer2013" and detect_format(tmp_path / "folders") == "imagefolder"
    assert len(load_dataset(tmp_path / "raf")) == 21
    assert load_dataset(tmp_path / "raf", variant="original")["path"].iloc[0].endswith("original/train_00001.jpg")
    assert load_dataset(csv_path)["label"].tolist() == [3]
    assert len(load_dataset(tmp_path / "folders", fmt="imagefolder")) == 2


def test_load_dataset_unrecognised(tmp_path):
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "stuff").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    for path in (tmp_path / "random", tmp_path / "notes.txt"):
        with pytest.raises(DataError) as info:
            load_dataset(path)
        message = str(info.value)
        assert str(path) in message and "RAF-DB:" in message and "FER2013:" in message and "image folder:" in message
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(tmp_path / "absent")
    with pytest.raises(ConfigError, match="unknown data format 'csv'"):
        load_dataset(tmp_path / "notes.txt", fmt="csv")


# --- images and the torch data set ----------------------------------------------------------

def test_open_image_corrupt_and_missing(tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(DataError, match="corrupt.jpg: unreadable or corrupt image"):
        open_image(corrupt)
    truncated = write_image(tmp_path / "truncated.jpg", size=64)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(DataError, match="truncated.jpg: unreadable or corrupt image"):
        open_image(str(truncated))
    with pytest.raises(DataError, match="absent.jpg: image file missing"):
        open_image({"path": str(tmp_path / "absent.jpg"), "pixels": None})


def test_open_image_converts_to_rgb_and_drafts(tmp_path):
    grey = tmp_path / "grey.png"
    Image.new("L", (8, 8), 77).save(grey)
    assert open_image(grey).getpixel((0, 0)) == (77, 77, 77)
    big = write_image(tmp_path / "big.jpg", size=400)
    assert open_image(big, draft_size=100).size == (100, 100)  # JPEG decoded at 1/4 scale


def test_fer_dataset_items_and_minority_augmentation(tmp_path):
    make_rafdb(tmp_path)
    index = load_rafdb(tmp_path)
    plain = FERDataset(index)  # the tensor path: decoded uint8 images
    image, label = plain[0]
    assert image.dtype == torch.uint8 and image.shape == (8, 8, 3) and label == 0 and len(plain) == 21
    assert np.array_equal(image.numpy(), np.asarray(open_image(index.iloc[0])))
    minority = {1, 5}
    dataset = FERDataset(index, batch_transform=BatchTransform(P32, "minority", train=True, augment_labels=minority))
    images, labels = dataset[np.arange(len(dataset))]
    assert torch.equal(images[0], image) and labels.tolist() == [dataset[i][1] for i in range(len(dataset))]
    out = dataset.batch_transform(images, labels, torch.Generator().manual_seed(0))
    same = [torch.equal(o, e) for o, e in zip(out, dataset.eval_transform(images))]
    assert all(s for s, label in zip(same, labels.tolist()) if label not in minority)   # only minority samples change
    assert not all(s for s, label in zip(same, labels.tolist()) if label in minority)
    clone = pickle.loads(pickle.dumps(dataset))
    assert all(torch.equal(clone[i][0], dataset[i][0]) and clone[i][1] == dataset[i][1] for i in range(len(dataset)))
    assert torch.equal(clone.batch_transform(images, labels, torch.Generator().manual_seed(0)), out)
    with pytest.raises(ConfigError, match="augment_labels"):
        BatchTransform(P32, "minority", train=True)


def test_fer_dataset_pixels_fast_path(tmp_path):
    index = load_fer2013(make_fer2013(tmp_path / "fer.csv", [("2", "Training", pixel_text(9))]))
    image, label = FERDataset(index)[0]
    assert image.shape == (48, 48, 3) and image[0, 0].tolist() == [9, 9, 9] and label == index_of("fear")


# --- audit fixes ----------------------------------------------------------------------------

@pytest.mark.parametrize("last_field, expected", [
    ('Training,"extra', "fer2013.csv:3: an unclosed double quote"),
    ('"Train"ing', "fer2013.csv:3: a stray double quote"),
])
def test_load_fer2013_quote_errors_name_their_own_line(tmp_path, last_field, expected):
    rows = [("1", "Training", pixel_text()), ("2", last_field, pixel_text())] + [("3", "Training", pixel_text())] * 20
    with pytest.raises(DataError, match=expected):
        load_fer2013(make_fer2013(tmp_path / "fer2013.csv", rows))


def test_load_dataset_fer2013_folder(tmp_path):
    csv_path = make_fer2013(tmp_path / "fer2013.csv", [("3", "Training", pixel_text())])
    assert load_dataset(tmp_path, fmt="fer2013")["id"].tolist() == load_fer2013(csv_path)["id"].tolist()
    assert detect_format(tmp_path) == "fer2013"                      # auto-detected too (fer study run --data DIR)
    assert load_dataset(tmp_path)["id"].tolist() == load_fer2013(csv_path)["id"].tolist()
    assert load_fer2013(tmp_path)["label"].tolist() == [index_of("happiness")]
    make_fer2013(tmp_path / "icml_face_data.csv", [("3", "Training", pixel_text())], "icml")
    with pytest.raises(DataError, match="pass the .csv file itself"):
        load_fer2013(tmp_path)


def test_load_rafdb_undecodable_line_names_line_and_byte_offset(tmp_path):
    make_rafdb(tmp_path)
    label_file = tmp_path / "basic" / "EmoLabel" / LABEL_FILE
    label_file.write_bytes(b"\xef\xbb\xbf" + label_file.read_bytes() + b"train_00099\xe9.jpg 3\n")
    with pytest.raises(DataError, match=f"{LABEL_FILE}:22: not UTF-8 text: byte 0xe9 at byte offset 11 of the line"):
        load_rafdb(tmp_path)


def test_open_image_empty_file_and_folder(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty.jpg: empty file \(0 bytes\)$"):
        open_image(tmp_path / "empty.jpg")
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(DataError, match="folder.jpg: is a folder, not an image file$"):
        open_image(tmp_path / "folder.jpg")


def test_load_rafdb_folder_where_an_image_should_be(tmp_path):
    make_rafdb(tmp_path)
    image = tmp_path / "basic" / "Image" / "aligned" / "train_00003_aligned.jpg"
    image.unlink()
    image.mkdir()
    with pytest.raises(DataError, match=f"train_00003_aligned.jpg: is a folder, not an image file \\(listed at .*{LABEL_FILE}:3\\)"):
        load_rafdb(tmp_path)
