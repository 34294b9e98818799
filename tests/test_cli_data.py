"""`fer data synth` and `fer data check` on hostile and messy input, through click's runner."""
from __future__ import annotations

import gzip
import shutil

from click.testing import CliRunner
from datafixtures import make_fer2013, make_rafdb, pixel_text

from fer_utils.cli import main

LABEL_FILE = "list_patition_label.txt"


def check(*args: str):
    return CliRunner().invoke(main, ["data", "check", *map(str, args)])


def test_check_variant_option(tmp_path):
    """A RAF-DB copy with only Image/original is checked with --variant original."""
    make_rafdb(tmp_path)
    shutil.rmtree(tmp_path / "basic" / "Image" / "aligned")
    res = check(tmp_path, "--variant", "original")
    assert res.exit_code == 0, res.output
    assert "OK" in res.output and "21 image file(s) opened and decoded" in res.output
    res = check(tmp_path)
    assert res.exit_code == 1 and "Image/aligned: wrong layout" in res.output and "'original' is there" in res.output
    res = check(tmp_path, "--variant", "cropped")
    assert res.exit_code == 2 and "aligned" in res.output and "original" in res.output


def test_check_empty_label_file_fails(tmp_path):
    make_rafdb(tmp_path)
    (tmp_path / "basic" / "EmoLabel" / LABEL_FILE).write_text("")
    res = check(tmp_path)
    assert res.exit_code == 1 and "PROBLEMS FOUND" in res.output
    assert f"{LABEL_FILE}: the label file lists no images" in res.output


def test_check_hostile_csv_names_file_and_line_without_traceback(tmp_path):
    csv_path = make_fer2013(tmp_path / "fer2013.csv", [("0", "Training", pixel_text())])
    csv_path.write_bytes(gzip.compress(csv_path.read_bytes()))
    res = check(csv_path)
    assert res.exit_code == 1 and not isinstance(res.exception, Exception)  # exit 1 is a SystemExit
    assert f"{csv_path}:1: a gzip-compressed file" in res.output and "Traceback" not in res.output


def test_synth_refuses_to_write_into_a_real_data_set(tmp_path):
    """`fer data synth --out <RAF-DB>/basic` used to add synthetic images to the real set, which
    `fer data check` then reported as that set."""
    make_rafdb(tmp_path)
    basic = tmp_path / "basic"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    res = CliRunner().invoke(main, ["data", "synth", "--out", str(basic), "--scale", "0.001"])
    assert res.exit_code == 2 and f"error: {basic} is not empty and has no synthetic.json" in res.output
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    res = check(tmp_path)
    assert res.exit_code == 0 and "21 image file(s) opened and decoded" in res.output
