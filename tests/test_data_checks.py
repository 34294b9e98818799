"""check_dataset collects every problem; fingerprints follow content, labels and splits."""
from __future__ import annotations

import gzip
import hashlib
import shutil

import numpy as np
import pytest
from datafixtures import make_fer2013, make_imagefolder, make_rafdb, pixel_text, write_image

from fer_utils.data import check_dataset, file_sha256, fingerprint, load_fer2013, load_rafdb
from fer_utils.errors import DataError

LABEL_FILE = "list_patition_label.txt"


def test_valid_rafdb_is_ok(tmp_path):
    make_rafdb(tmp_path)
    report = check_dataset(tmp_path)
    assert report.ok and report.errors == [] and report.warnings == [] and report.fmt == "rafdb"
    assert report.counts["train"].tolist() == [2] * 7 and report.counts["test"].tolist() == [1] * 7
    assert report.images_checked == 21
    text = report.format()
    assert "OK" in text and "surprise" in text and "21 image file(s) opened" in text


def test_rafdb_problems_are_all_collected(tmp_path):
    make_rafdb(tmp_path, extra_text="train_00101.jpg 0\ntrain_00102.jpg 8\nthis line is malformed\n")
    aligned = tmp_path / "basic" / "Image" / "aligned"
    (aligned / "train_00002_aligned.jpg").unlink()
    (aligned / "test_00003_aligned.jpg").write_bytes(np.random.default_rng(1).bytes(500))
    write_image(aligned / "train_09999_aligned.jpg")
    report = check_dataset(tmp_path)
    assert not report.ok and len(report.errors) == 5
    errors = "\n".join(report.errors)
    assert f"{LABEL_FILE}:22: label '0' of train_00101.jpg is not an integer 1..7" in errors
    assert f"{LABEL_FILE}:23: label '8'" in errors
    assert f"{LABEL_FILE}:24: malformed line" in errors
    assert f"train_00002_aligned.jpg: image file missing (listed at {tmp_path / 'basic' / 'EmoLabel' / LABEL_FILE}:2)" in errors
    assert "test_00003_aligned.jpg: unreadable or corrupt image" in errors and f"{LABEL_FILE}:17)" in errors
    assert len(report.warnings) == 1 and "train_09999_aligned.jpg: image not listed" in report.warnings[0]
    assert report.counts["total"].sum() == 21  # the three bad lines are not counted
    text = report.format(max_messages=2)
    assert "PROBLEMS FOUND" in text and "5 error(s), 1 warning(s)" in text and "... and 3 more" in text


def test_loader_raises_what_the_checker_reports_first(tmp_path):
    make_rafdb(tmp_path, extra_text="train_00101.jpg 0\ntrain_00102.jpg 8\n")
    with pytest.raises(DataError) as info:
        load_rafdb(tmp_path)
    assert str(info.value) == check_dataset(tmp_path).errors[0]


def test_wrong_rafdb_layout(tmp_path):
    (tmp_path / "basic" / "Image").mkdir(parents=True)
    report = check_dataset(tmp_path)
    assert report.fmt == "rafdb" and len(report.errors) == 2
    assert f"EmoLabel/{LABEL_FILE}: wrong layout" in report.errors[0]
    assert "Image/aligned: wrong layout" in report.errors[1]


def test_missing_image_folder_is_one_error(tmp_path):
    make_rafdb(tmp_path)
    report = check_dataset(tmp_path, variant="original")
    assert report.ok
    (tmp_path / "basic" / "Image" / "original").rename(tmp_path / "basic" / "Image" / "moved")
    report = check_dataset(tmp_path, variant="original")
    assert len(report.errors) == 1 and "Image/original: wrong layout" in report.errors[0]


def test_fer2013_rows_collected(tmp_path):
    rows = [("0", "Training", pixel_text()), ("9", "Training", pixel_text()),
            ("1", "PublicTest", pixel_text(count=100)), ("2", "PrivateTest", pixel_text())]
    report = check_dataset(make_fer2013(tmp_path / "fer2013.csv", rows))
    assert report.fmt == "fer2013" and len(report.errors) == 2
    assert "fer2013.csv:3: emotion '9'" in report.errors[0] and "fer2013.csv:4: 100 pixel values" in report.errors[1]
    assert report.counts.columns.tolist() == ["train", "test", "total"]


def test_fer2013_unreadable_rows_collected_with_their_lines(tmp_path):
    rows = [("0", "Training", pixel_text()), ("1", "Training", "1 " * 70_000), ("2", "Training\xff", pixel_text()),
            ("3", "PublicTest", pixel_text())]
    csv_path = make_fer2013(tmp_path / "fer2013.csv", rows)
    csv_path.write_bytes(csv_path.read_bytes().replace("\xff".encode("utf-8"), b"\xff"))
    report = check_dataset(csv_path)
    assert len(report.errors) == 2
    assert "fer2013.csv:3: unreadable CSV row" in report.errors[0] and "field limit" in report.errors[0]
    assert "fer2013.csv:4: not UTF-8 text: byte 0xff" in report.errors[1]
    assert report.counts["total"].sum() == 2  # the rows after a bad one are still read


def test_gzip_named_csv_is_one_error(tmp_path):
    csv_path = make_fer2013(tmp_path / "fer2013.csv", [("0", "Training", pixel_text())])
    csv_path.write_bytes(gzip.compress(csv_path.read_bytes()))
    report = check_dataset(csv_path)
    assert report.errors == [f"{csv_path}:1: a gzip-compressed file, not CSV text; decompress it first"]


def test_empty_data_sets_are_errors(tmp_path):
    """An empty label file (with or without images beside it), an empty RAF-DB skeleton and a
    header-only CSV are not OK data sets."""
    make_rafdb(tmp_path / "unlisted")
    (tmp_path / "unlisted" / "basic" / "EmoLabel" / LABEL_FILE).write_text("")
    make_rafdb(tmp_path / "skeleton", lines=[])
    for variant in ("aligned", "original"):
        (tmp_path / "skeleton" / "basic" / "Image" / variant).mkdir(parents=True)
    (tmp_path / "header.csv").write_text("emotion,pixels,Usage\n")
    for path in (tmp_path / "unlisted", tmp_path / "skeleton", tmp_path / "header.csv"):
        report = check_dataset(path)
        assert not report.ok and "PROBLEMS FOUND" in report.format(), path
        assert any("lists no images" in e or "no data rows" in e for e in report.errors), report.errors


def test_decoded_count_leaves_out_images_that_fail(tmp_path):
    make_rafdb(tmp_path)
    aligned = tmp_path / "basic" / "Image" / "aligned"
    (aligned / "train_00001_aligned.jpg").write_bytes(b"not a jpeg")
    (aligned / "train_00002_aligned.jpg").unlink()
    report = check_dataset(tmp_path)
    assert len(report.errors) == 2 and report.images_checked == 19
    assert "19 image file(s) opened and decoded" in report.format()


def test_wrong_variant_says_which_one_is_there(tmp_path):
    make_rafdb(tmp_path)
    shutil.rmtree(tmp_path / "basic" / "Image" / "aligned")
    report = check_dataset(tmp_path)
    assert len(report.errors) == 1 and "variant 'original' is there" in report.errors[0]
    assert check_dataset(tmp_path, variant="original").ok


def test_imagefolder_problems_collected(tmp_path):
    make_imagefolder(tmp_path, {"happy": 2, "bored": 1, "슬픔": 1})
    (tmp_path / "happy" / "001.png").write_bytes(b"not a png")
    (tmp_path / "README.md").write_text("about")
    report = check_dataset(tmp_path)
    assert report.fmt == "imagefolder" and len(report.errors) == 2
    assert any("bored: unknown class folder" in e for e in report.errors)
    assert any(e.endswith("happy/001.png: unreadable or corrupt image (cannot identify image file "
                          f"'{tmp_path / 'happy' / '001.png'}')") for e in report.errors)
    assert len(report.warnings) == 1 and "README.md: file outside a class folder" in report.warnings[0]


def test_unrecognised_path_is_reported_not_raised(tmp_path):
    report = check_dataset(tmp_path / "absent")
    assert not report.ok and "no such file or folder" in report.errors[0] and report.fmt == ""
    assert "format: unknown" in report.format()


# --- fingerprints ---------------------------------------------------------------------------

def test_fingerprint_follows_bytes_labels_and_splits(tmp_path):
    make_rafdb(tmp_path)
    index = load_rafdb(tmp_path)
    base = fingerprint(index)
    assert len(base) == 16 and base == fingerprint(index.sample(frac=1, random_state=0))  # order-free
    path = index["path"].iloc[3]
    data = bytearray(open(path, "rb").read())
    data[-3] ^= 1
    with open(path, "wb") as handle:
        handle.write(data)
    changed = fingerprint(index)
    assert changed != base
    assert fingerprint(index, content=False) == fingerprint(load_rafdb(tmp_path), content=False)
    relabelled = index.copy()
    relabelled.loc[0, "label"] = 6
    assert fingerprint(relabelled) != changed and fingerprint(relabelled, content=False) != fingerprint(index, content=False)
    resplit = index.copy()
    resplit.loc[0, "split"] = "val"
    assert fingerprint(resplit) != changed


def test_fingerprint_of_pixels(tmp_path):
    index = load_fer2013(make_fer2013(tmp_path / "fer.csv", [("0", "Training", pixel_text()), ("1", "Training", pixel_text(5))]))
    base = fingerprint(index)
    index.at[1, "pixels"] = index.at[1, "pixels"].copy()
    index.at[1, "pixels"][0, 0] ^= 1
    assert fingerprint(index) != base


def test_file_sha256(tmp_path):
    """Correctness only: hashing speed is measured by benchmarks/bench_hashing.py, not here."""
    paths = [write_image(tmp_path / f"{i:04d}.jpg", (i % 256, 0, 0), size=16) for i in range(3)]
    assert [file_sha256(p) for p in paths] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    with pytest.raises(DataError, match="absent.jpg: cannot read file"):
        file_sha256(tmp_path / "absent.jpg")


# --- audit fixes: rows never vanish, folders holding a CSV, per-line decoding, empty/folder images, counts

def test_fer2013_stray_quote_is_reported_at_its_line_and_no_row_vanishes(tmp_path):
    """A row ending in ``,"extra`` used to swallow the following lines into one field: the error
    came many lines later (field limit) and the rows in between vanished without a word."""
    rows = [(str(i % 7), "Training", pixel_text(i)) for i in range(30)]
    rows[4] = ("0", 'Training,"extra', pixel_text())  # data row 5 is line 6
    report = check_dataset(make_fer2013(tmp_path / "fer2013.csv", rows))
    assert len(report.errors) == 1, report.errors
    assert f"{tmp_path / 'fer2013.csv'}:6: an unclosed double quote" in report.errors[0]
    assert "swallow" in report.errors[0]
    assert report.counts["total"].sum() == 29  # every other row is read; line 6 is not counted


def test_folder_holding_a_fer2013_csv_is_checked(tmp_path):
    rows = [("0", "Training", pixel_text()), ("3", "PublicTest", pixel_text())]
    for name, header in (("fer2013.csv", "fer2013"), ("icml_face_data.csv", "icml")):
        folder = tmp_path / name.removesuffix(".csv")
        folder.mkdir()
        make_fer2013(folder / name, rows, header)
        for fmt in ("auto", "fer2013"):
            report = check_dataset(folder, fmt=fmt)
            assert report.ok and report.fmt == "fer2013" and report.counts["total"].sum() == 2, (name, fmt, report.errors)
    other = tmp_path / "other"
    other.mkdir()
    make_fer2013(other / "x.csv", rows)
    for fmt in ("auto", "fer2013"):
        report = check_dataset(other, fmt=fmt)
        assert len(report.errors) == 1 and f"pass the .csv file itself: {other / 'x.csv'}" in report.errors[0], report.errors


def test_rafdb_undecodable_line_keeps_the_other_lines(tmp_path):
    """One Latin-1 byte is one error at its line; lines that exist but are bad (undecodable,
    label 0, 8 or x) do not make their images 'not listed'."""
    make_rafdb(tmp_path)
    label_file = tmp_path / "basic" / "EmoLabel" / LABEL_FILE
    lines = label_file.read_bytes().split(b"\n")
    lines[2], lines[3], lines[4] = b"train_00003.jpg 0", b"train_00004.jpg 8", b"train_00005.jpg x"
    lines[9] = "train_00010.jpg 3 \xe9\n".encode("latin-1").rstrip(b"\n")
    label_file.write_bytes(b"\n".join(lines))
    report = check_dataset(tmp_path)
    assert report.warnings == [], report.warnings
    assert len(report.errors) == 4, report.errors
    assert f"{LABEL_FILE}:10: not UTF-8 text: byte 0xe9 at byte offset 18 of the line" in report.errors[3]
    assert report.counts["total"].sum() == 17 and report.images_checked == 17


def test_empty_image_file_and_folder_in_its_place(tmp_path):
    make_rafdb(tmp_path)
    aligned = tmp_path / "basic" / "Image" / "aligned"
    (aligned / "train_00001_aligned.jpg").write_bytes(b"")
    (aligned / "train_00002_aligned.jpg").unlink()
    (aligned / "train_00002_aligned.jpg").mkdir()
    report = check_dataset(tmp_path)
    where = tmp_path / "basic" / "EmoLabel" / LABEL_FILE
    assert sorted(report.errors) == [
        f"{aligned / 'train_00001_aligned.jpg'}: empty file (0 bytes) (listed at {where}:1)",
        f"{aligned / 'train_00002_aligned.jpg'}: is a folder, not an image file (listed at {where}:2)"]
    make_imagefolder(tmp_path / "folders", {"happy": 2})
    (tmp_path / "folders" / "happy" / "000.png").write_bytes(b"")
    report = check_dataset(tmp_path / "folders")
    assert report.errors == [f"{tmp_path / 'folders' / 'happy' / '000.png'}: empty file (0 bytes)"]


def test_counts_table_says_it_counts_listed_images_beside_the_readable_count(tmp_path):
    make_rafdb(tmp_path)
    aligned = tmp_path / "basic" / "Image" / "aligned"
    (aligned / "train_00001_aligned.jpg").write_bytes(b"not a jpeg")
    (aligned / "train_00002_aligned.jpg").unlink()
    text = check_dataset(tmp_path).format()
    assert "19 image file(s) opened and decoded, of 21 listed: 2 missing or unreadable (see Errors)" in text
    assert "Images listed in the label file, per class and split (readable or not):" in text
    assert "Images per class and split:" not in text
    ok = check_dataset(make_rafdb(tmp_path / "ok")).format()
    assert "21 image file(s) opened and decoded\n" in ok and "Images listed in the label file, per class and split:" in ok
