"""The content-addressed cache and the one atomic write (fer_utils.cache): torch-free."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from fer_utils.cache import Cache, atomic_write, cache_key

PARTS = {"image": "ab" * 32, "weights": "cd" * 32, "preprocessing": {"image_size": 32, "mean": [0.5, 0.5, 0.5]},
         "layer": "forward_features", "precision": "float32", "seed": 0, "scale": 0.5, "flag": True, "note": None}
KEY = cache_key("features", 1, **PARTS)


def test_key_is_stable_across_processes_and_part_order():
    assert len(KEY) == 64 and int(KEY, 16) >= 0
    assert cache_key("features", 1, **dict(reversed(PARTS.items()))) == KEY
    code = f"from fer_utils.cache import cache_key; print(cache_key('features', 1, **{PARTS!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == KEY  # no per-process salt (unlike hash())
    assert Cache(None, "features", 1).key(**PARTS) == KEY


@pytest.mark.parametrize("name, value", [
    ("image", "ab" * 31 + "ac"), ("weights", "x"), ("preprocessing", {"image_size": 33, "mean": [0.5, 0.5, 0.5]}),
    ("layer", "output"), ("precision", "torch.bfloat16"), ("seed", 1), ("scale", 0.5000001), ("flag", False),
    ("note", ""), ("extra", 1)])
def test_key_changes_with_every_part(name, value):
    assert cache_key("features", 1, **{**PARTS, name: value}) != KEY


def test_key_changes_with_namespace_version_and_type():
    assert cache_key("captions", 1, **PARTS) != KEY
    assert cache_key("features", 2, **PARTS) != KEY
    assert cache_key("features", "1", **PARTS) != KEY
    assert len({cache_key("n", 1, x=v) for v in (1, 1.0, True, "1", [1], None)}) == 6
    assert cache_key("n", 1, x=(1, 2)) == cache_key("n", 1, x=[1, 2])  # tuples are lists


@pytest.mark.parametrize("value, named", [
    (np.float32(1.0), "part x has type float32"), (b"bytes", "part x has type bytes"),
    ({1: "a"}, "part x: dict keys must be str"), ([1, {"k": object()}], r"part x\[1\]\['k'\] has type object"),
    ({1, 2}, "part x has type set")])
def test_key_rejects_non_json_parts_naming_them(value, named):
    with pytest.raises(TypeError, match=named):
        cache_key("n", 1, x=value)


def test_round_trips(tmp_path):
    cache = Cache(tmp_path, "things", 1)
    array = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    cache.put_array("a" * 64, array)
    got = cache.get_array("a" * 64)
    assert got.dtype == np.float32 and np.array_equal(got, array)
    assert cache.path("a" * 64) == tmp_path / "things" / "aa" / f"{'a' * 64}.npy"

    obj = {"caption": "a smiling face ☺", "scores": [0.1, 1 / 3], "n": 2, "ok": True, "none": None}
    cache.put_json("b" * 64, obj)
    assert cache.get_json("b" * 64) == obj

    table = pd.DataFrame({"id": ["001", "x"], "n": [1, 2], "p": [1 / 3, float("nan")], "ok": [True, False],
                          "text": ["日本", None], "cat": pd.Categorical(["a", "b"])})
    cache.put_table("c" * 64, table)
    got = cache.get_table("c" * 64)
    pd.testing.assert_frame_equal(got, table)  # dtypes too: "001" stays a string, 1/3 exact
    with pytest.raises(TypeError, match="Timestamp"):
        cache.put_table("d" * 64, pd.DataFrame({"t": pd.to_datetime(["2024-01-01"])}))
    assert cache.get_table("d" * 64) is None and not list((tmp_path / "things").rglob("*.tmp"))


def test_missing_and_corrupt_entries_are_misses(tmp_path):
    cache = Cache(tmp_path, "things", 1)
    key = cache.key(item=1)
    assert cache.get_array(key) is None and cache.get_json(key) is None and cache.get_table(key) is None
    cache.put_array(key, np.ones(100, dtype=np.float32))
    cache.put_json(key, {"a": 1})
    cache.put_table(key, pd.DataFrame({"a": [1]}))
    for kind in ("array", "json", "table"):
        path = cache.path(key, kind)
        good = path.read_bytes()
        for bad in (good[: len(good) // 2], b"", b"\x93NUMPY\x01\x00\x20\x00{'descr': ((((, }\n", b"\xff\xfe[1,"):
            path.write_bytes(bad)
            assert cache.get(key, kind) is None, (kind, bad[:20])
        path.write_bytes(good)
        assert cache.get(key, kind) is not None
    with pytest.raises(ValueError, match="not a cache key"):
        cache.get_array("../../etc/passwd")
    with pytest.raises(ValueError, match="unknown cache entry kind 'pickle'"):
        cache.get(key, "pickle")


def test_disabled_cache_misses_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = Cache(None, "things", 1)
    key = cache.key(item=1)
    assert not cache.enabled and cache.put_array(key, np.ones(3)) is None and cache.path(key) is None
    assert cache.get_array(key) is None and cache.get_arrays([key, key]) == [None, None]
    cache.put_arrays([key], [np.ones(3)])
    assert list(tmp_path.iterdir()) == []


def test_namespaces_over_one_root_do_not_collide(tmp_path):
    features, captions = Cache(tmp_path, "features", 1), Cache(tmp_path, "captions", 1)
    parts = {"image": "ab" * 32}
    features.put_json(features.key(**parts), "a vector")
    captions.put_json(captions.key(**parts), "a caption")
    assert features.key(**parts) != captions.key(**parts)
    assert features.get_json(features.key(**parts)) == "a vector"
    assert captions.get_json(captions.key(**parts)) == "a caption"
    assert features.get_json(captions.key(**parts)) is None  # a key is read only in its own folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["captions", "features"]
    with pytest.raises(ValueError, match="namespace"):
        Cache(tmp_path, "../up", 1)


def test_shards_add_up(tmp_path):
    """Two workers (here: two Cache objects over two folders, then one copied onto the other) each
    cache their half of the items; together the entries cover every item."""
    keys = [cache_key("features", 1, image=f"img{i}") for i in range(10)]
    rows = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    shard_a, shard_b = Cache(tmp_path / "a", "features", 1), Cache(tmp_path / "b", "features", 1)
    shard_a.put_arrays(keys[:6], rows[:6])
    shard_b.put_arrays(keys[4:], rows[4:])  # overlapping item: same key, same content
    assert [r is None for r in shard_a.get_arrays(keys)] == [False] * 6 + [True] * 4
    for path in (tmp_path / "b").rglob("*.npy"):  # what rsync/cp of one cache folder onto another does
        target = tmp_path / "a" / path.relative_to(tmp_path / "b")
        atomic_write(target, path.read_bytes())
    merged = shard_a.get_arrays(keys)
    assert np.array_equal(np.stack(merged), rows)
    with pytest.raises(ValueError, match="2 keys but 1 values"):
        shard_a.put_arrays(keys[:2], rows[:1])


def test_atomic_write_replaces_and_creates_folders(tmp_path):
    path = tmp_path / "sub" / "f.txt"
    assert atomic_write(path, "héllo\n") == path and path.read_text(encoding="utf-8") == "héllo\n"
    atomic_write(path, b"\x00bytes")
    assert path.read_bytes() == b"\x00bytes"
    atomic_write(path, lambda tmp: tmp.write_text("by a writer"))
    assert path.read_text() == "by a writer"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.txt"]


def test_failing_writer_keeps_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text("old, complete\n")

    def half_then_fail(tmp):
        tmp.write_text("new, half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, half_then_fail)
    with pytest.raises(OSError, match="did not write"):
        atomic_write(path, lambda tmp: None)
    with pytest.raises(TypeError, match="bytes, str or a writer"):
        atomic_write(path, 42)
    assert path.read_text() == "old, complete\n"
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]


def test_cache_module_does_not_import_torch():
    code = "import sys, fer_utils.cache; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
