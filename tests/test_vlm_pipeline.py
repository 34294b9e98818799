"""Captions and embeddings of a data index through the cache (fer_utils.vlm.pipeline), the linear
probe, the prompt-ablation steps and the `fer caption` / `fer embed` commands — on the real tiny
BLIP-2 (transformers classes built in code), the real all-MiniLM-L6-v2 and a real synthetic set."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fer_utils.cli import main
from fer_utils.data import load_dataset, make_splits
from fer_utils.study.probe import linear_probe
from fer_utils.vlm import GenerationSettings, make_captioner
from fer_utils.vlm.pipeline import CAPTION_NAMESPACE, caption_index, embed_texts, shard
from fer_utils.vlm.prompts import PROMPTS

SETTINGS = GenerationSettings(max_new_tokens=6, batch_size=8)


@pytest.fixture(scope="module")
def index(synthetic_rafdb):
    return make_splits(load_dataset(synthetic_rafdb), val_fraction=0.2, seed=42)


@pytest.fixture(scope="module")
def tiny(one_torch_thread):
    return make_captioner("tiny_blip2", seed=0, device="cpu")


class Counting:
    """Wraps a real captioner and counts the images it is asked to caption (the rest came from the cache)."""

    def __init__(self, inner):
        self.inner, self.seen = inner, 0
        self.name, self.identity = inner.name, inner.identity

    def caption(self, images, prompt, settings):
        self.seen += len(images)
        return self.inner.caption(images, prompt, settings)


def test_captions_are_cached_per_image_and_keyed_by_prompt_and_settings(index, tiny, tmp_path):
    rows = index.iloc[:12]
    counting = Counting(tiny)
    first = caption_index(rows, counting, PROMPTS["original"], SETTINGS, tmp_path)
    assert counting.seen == 12 and first.throughput.computed == 12 and first.throughput.cache_hits == 0
    assert list(first.table["id"]) == list(rows["id"].astype(str))
    again = caption_index(rows, counting, PROMPTS["original"], SETTINGS, tmp_path)
    assert counting.seen == 12 and again.throughput.cache_hits == 12          # nothing recomputed
    assert again.table["raw"].tolist() == first.table["raw"].tolist()
    caption_index(rows, counting, PROMPTS["one_word"], SETTINGS, tmp_path)    # another prompt misses
    assert counting.seen == 24
    caption_index(rows, counting, PROMPTS["original"], GenerationSettings(max_new_tokens=7, batch_size=8), tmp_path)
    assert counting.seen == 36                                                # another setting misses
    entries = list((tmp_path / CAPTION_NAMESPACE).rglob("*.json"))
    assert len(entries) == 36


def test_a_cached_caption_keeps_what_it_cost_so_a_warm_run_still_reports_a_rate(index, tiny, tmp_path):
    rows = index.iloc[:8]
    first = caption_index(rows, tiny, PROMPTS["original"], SETTINGS, tmp_path)
    assert first.throughput.per_second > 0 and first.throughput.hits_timed == 0
    entries = sorted((tmp_path / CAPTION_NAMESPACE).rglob("*.json"))
    costs = [json.loads(path.read_text())["seconds"] for path in entries]
    assert len(costs) == 8 and all(c > 0 for c in costs)
    assert sum(costs) == pytest.approx(first.throughput.seconds)     # the batch's time, shared out
    warm = caption_index(rows, tiny, PROMPTS["original"], SETTINGS, tmp_path).throughput
    assert warm.computed == 0 and warm.per_second is None and warm.hits_timed == 8
    assert warm.per_second_when_made == pytest.approx(first.throughput.per_second)
    assert "images/s when the cached ones were made" in warm.summary()
    for path in entries[:3]:            # entries of an older version: no time, or a broken one
        entry = json.loads(path.read_text())
        entry["seconds"] = "soon" if path == entries[0] else None
        path.write_text(json.dumps(entry))
    older = caption_index(rows, tiny, PROMPTS["original"], SETTINGS, tmp_path).throughput
    assert older.cache_hits == 8 and older.hits_timed == 5
    assert older.per_second_when_made == pytest.approx(5 / sum(costs[3:]))


def test_shards_add_up_to_the_whole_run(index, tiny, tmp_path):
    rows = index.iloc[:10]
    parts = [shard(rows, f"{i}/3") for i in (1, 2, 3)]
    assert sorted(sum((list(p["id"]) for p in parts), [])) == sorted(rows["id"])
    for part in parts:
        caption_index(part, tiny, PROMPTS["original"], SETTINGS, tmp_path)
    counting = Counting(tiny)
    whole = caption_index(rows, counting, PROMPTS["original"], SETTINGS, tmp_path)
    assert counting.seen == 0 and whole.throughput.cache_hits == 10
    fresh = caption_index(rows, tiny, PROMPTS["original"], SETTINGS, None)     # no cache: same captions
    assert fresh.table["raw"].tolist() == whole.table["raw"].tolist()
    with pytest.raises(ValueError, match="i/n"):
        shard(rows, "3")
    with pytest.raises(ValueError, match="between 1 and n"):
        shard(rows, "4/3")


def test_simulated_captions_are_not_cached_and_carry_their_signal(index, tmp_path):
    sim = make_captioner("simulated", accuracy=1.0)
    result = caption_index(index, sim, PROMPTS["original"], SETTINGS, tmp_path)
    assert not (tmp_path / CAPTION_NAMESPACE).exists()
    assert (result.table["vote"].astype(int).to_numpy() == index["label"].to_numpy()).all()


@pytest.fixture(scope="module")
def minilm(one_torch_thread):
    from fer_utils.vlm import make_encoder
    return make_encoder("minilm", device="cpu")


def test_embeddings_are_cached_per_distinct_text(minilm, tmp_path):
    texts = ["The person looks happy.", "A face showing fear.", "The person looks happy."]
    vectors, first = embed_texts(texts, minilm, tmp_path)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.array_equal(vectors[0], vectors[2]) and first.computed == 2
    again, second = embed_texts(texts[::-1], minilm, tmp_path)
    assert second.computed == 0 and np.allclose(again, vectors[::-1])


def test_linear_probe_chooses_c_on_validation_and_reads_test_once(index):
    rng = np.random.default_rng(0)
    labels = index["label"].to_numpy()
    informative = np.eye(7)[labels] * 3 + rng.normal(scale=0.5, size=(len(index), 7))
    result = linear_probe(informative, index, cs=[0.001, 1.0], n_bootstrap=20)
    assert result.c in (0.001, 1.0) and set(result.val_macro_f1) == {0.001, 1.0}
    assert result.metrics["val_macro_f1"] == max(result.val_macro_f1.values())
    assert result.metrics["macro_f1"] > 0.8
    assert len(result.predictions) == (index["split"] == "test").sum()
    noise = linear_probe(rng.normal(size=(len(index), 7)), index, cs=[1.0], n_bootstrap=0)
    assert noise.metrics["macro_f1"] < 0.5
    with pytest.raises(ValueError, match="feature rows"):
        linear_probe(informative[:-1], index)


def test_fer_caption_and_embed_commands(synthetic_rafdb, tmp_path, one_torch_thread):
    runner = CliRunner()
    out = tmp_path / "captions.csv"
    args = ["--captioner", "tiny_blip2", "--max-new-tokens", "5", "--batch-size", "16", "--cache", str(tmp_path / "c"),
            "--no-progress"]
    for i in (1, 2):
        res = runner.invoke(main, ["caption", str(synthetic_rafdb), *args, "--shard", f"{i}/2"])
        assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["caption", str(synthetic_rafdb), *args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    n = len(load_dataset(synthetic_rafdb))
    assert f"{n} images ({n} distinct): {n} from the cache, 0 computed" in res.output   # the shards added up
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == ["id", "caption", "raw", "vote"] and len(table) == n
    # the file serves as precomputed captions elsewhere
    npz = tmp_path / "emb.npz"
    res = runner.invoke(main, ["embed", str(synthetic_rafdb), "--captioner", "precomputed", "--captions-file",
                               str(out), "--encoder", "minilm", "--cache", str(tmp_path / "c"), "--no-progress",
                               "--out", str(npz)])
    assert res.exit_code == 0, res.output
    assert "embeddings (" in res.output and "384-d" in res.output
    saved = np.load(npz)
    assert saved["embeddings"].shape == (n, 384) and list(saved["ids"]) == list(table["id"].astype(str))
    res = runner.invoke(main, ["caption", str(synthetic_rafdb), "--shard", "0/2"])
    assert res.exit_code == 2 and "--shard" in res.output
    res = runner.invoke(main, ["caption", str(synthetic_rafdb), "--captioner", "blip2", "--model-id",
                               "Salesforce/blip2-flan-t5-xl"])
    assert res.exit_code == 2 and "Salesforce/blip2-flan-t5-xl" in res.output and "download" in res.output


def test_prompt_run_records_captions_votes_and_probe(synthetic_rafdb, tmp_path, one_torch_thread):
    from fer_utils.study import config, prompt_report, prompt_study, runs

    cfg = config.VLMPromptsConfig(data_path=str(synthetic_rafdb), captioner="simulated", simulated_accuracy=0.9,
                                  text_encoder="minilm", n_bootstrap=20, cache_dir=str(tmp_path / "cache"),
                                  run_dir=str(tmp_path / "run"))
    run = prompt_study.run_prompt(cfg, progress=False)
    folder = prompt_study.save_prompt_run(cfg, run)
    rec = runs.load_run(folder)
    m = rec["metrics"]
    assert m["captioner"]["simulated"] and m["vote"]["coverage"] == 1.0
    assert m["vote"]["accuracy"] == pytest.approx(0.9, abs=0.15)
    assert m["probe"]["macro_f1"] > 0.5 and m["macro_f1"] == m["probe"]["macro_f1"]
    captions = pd.read_csv(folder / "captions.csv", keep_default_na=False)
    assert len(captions) == len(run.index) and set(captions["split"]) == {"train", "val", "test"}
    assert "Simulated captions" in prompt_report.captioner_notice(m)
    table = prompt_report.prompt_table({"simulated": rec})
    assert table.index[-1].startswith("majority class")
    assert "simulated" in prompt_report.comparison_interpretation({"simulated": rec})
    json.dumps(m)   # the record is plain JSON


def test_a_shard_of_zero_parts_says_n_must_be_at_least_1(synthetic_rafdb, index):
    with pytest.raises(ValueError, match="n must be at least 1"):
        shard(index, "1/0")
    res = CliRunner().invoke(main, ["caption", str(synthetic_rafdb), "--shard", "1/0"])
    assert res.exit_code == 2 and "n must be at least 1" in res.output and "--shard" in res.output


def test_caption_errors_name_the_options_not_the_config_fields(synthetic_rafdb, tmp_path):
    runner = CliRunner()
    common = ["caption", str(synthetic_rafdb), "--cache", str(tmp_path / "c"), "--no-progress"]
    res = runner.invoke(main, [*common, "--captioner", "precomputed"])
    assert res.exit_code == 2 and "needs --captions-file" in res.output and "captions_file" not in res.output
    res = runner.invoke(main, [*common, "--captioner", "simulated", "--batch-size", "0"])
    assert res.exit_code == 2 and "--batch-size must be an integer >= 1" in res.output
    assert "generation setting" not in res.output and "batch_size" not in res.output


def test_allow_extra_ids_accepts_a_captions_file_made_for_more_images(synthetic_rafdb, tmp_path):
    ids = load_dataset(synthetic_rafdb)["id"].astype(str).tolist()
    captions = tmp_path / "captions.csv"
    pd.DataFrame({"id": [*ids, "not-in-the-data"], "caption": "a happy face"}).to_csv(captions, index=False)
    common = ["caption", str(synthetic_rafdb), "--captioner", "precomputed", "--captions-file", str(captions),
              "--cache", str(tmp_path / "c"), "--no-progress", "--out", str(tmp_path / "out.csv")]
    res = CliRunner().invoke(main, common)
    assert res.exit_code == 2 and "not-in-the-data" in res.output and "pass --allow-extra-ids" in res.output
    res = CliRunner().invoke(main, [*common, "--allow-extra-ids"])
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(tmp_path / "out.csv")) == len(ids)


def test_embed_encoder_is_a_choice():
    res = CliRunner().invoke(main, ["embed", "--help"])
    assert "[clip|open_clip|minilm|tiny_clip|tiny_open_clip]" in res.output
    res = CliRunner().invoke(main, ["embed", ".", "--encoder", "CLIP"])
    assert res.exit_code == 2 and "'CLIP' is not one of" in res.output
