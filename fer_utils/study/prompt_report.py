"""Page text of the prompt-ablation pages, from what each run recorded (torch-free to import).

- :func:`captioner_notice`: what made the captions, as a box a reader cannot miss when the
  captions carry no meaning (the tiny BLIP-2) or are a simulated control;
- :func:`run_settings`: a run's captioner, prompt, generation settings and text encoder;
- :func:`prompt_table`: one row per prompt-ablation run, with the majority-class baseline;
- :func:`prompt_interpretation` and :func:`comparison_interpretation`: what the numbers say, and
  what they cannot say with the captioner used.
"""
from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from fer_utils.labels import EMOTIONS


def _kind(captioner: Mapping) -> str:
    if captioner.get("simulated"):
        return "simulated"
    if not captioner.get("meaningful", True):
        return "meaningless"
    return captioner.get("identity", {}).get("backend", "model")


def captioner_notice(metrics: Mapping) -> str:
    """A MyST admonition saying what wrote this run's captions (show it in a cell with
    :data:`fer_utils.study.report.BANNER_CELL_METADATA`)."""
    captioner = metrics["captioner"]
    kind = _kind(captioner)
    identity = captioner.get("identity", {})
    if kind == "meaningless":
        return ("```{admonition} These captions carry no meaning\n:class: warning\n"
                f"They come from **{captioner['name']}**: a BLIP-2 with random weights, built in code through "
                "the same transformers classes as the real model, because no pretrained captioner can be "
                "downloaded where this book was built. It runs the real path (processor, batched generation, "
                "cache, post-processing, text encoder, probe), but its sentences describe nothing: at most "
                "they are a random function of the pixels. Every number on this page that rests on these captions "
                "is what such text scores, a floor, not a finding about prompts or captions. `fer study run "
                "--profile full` with BLIP-2's weights in the Hugging Face cache replaces it.\n```\n")
    if kind == "simulated":
        return ("```{admonition} Simulated captions: an experimental control, not a model\n:class: warning\n"
                f"Each caption names the face's true emotion with probability p = {identity.get('accuracy')} "
                "and another emotion, chosen at random, otherwise, in varied sentence templates; the prompt is "
                "ignored. The text therefore carries a known amount of signal: the page shows how much of it "
                "the vote and the text encoder recover. It says nothing about what a real captioner writes.\n```\n")
    if kind == "precomputed":
        return (f"Captions read from a file (sha256 {str(identity.get('file_sha256', ''))[:12]}…): they were "
                "written elsewhere, by whatever captioner and prompt made that file.\n")
    revision = identity.get("revision")
    return (f"Captions written by **{identity.get('model', captioner['name'])}**"
            + (f" (revision {str(revision)[:12]})" if revision else "") + ".\n")


def run_settings(params: Mapping, metrics: Mapping) -> str:
    """What a run used, as a Markdown list: captioner, prompt (its text), generation settings,
    post-processing, text encoder, probe."""
    simulated = _kind(metrics["captioner"]) == "simulated"
    ignored = " (ignored by the simulated captioner)" if simulated else ""
    rows = {
        "captioner": metrics["captioner"]["name"],
        "prompt": f"{metrics['prompt']['name']}: `{metrics['prompt']['text']}`{ignored}",
        "generation": (f"max_new_tokens {params.get('max_new_tokens')}, min_new_tokens {params.get('min_new_tokens')}, "
                       f"num_beams {params.get('num_beams')}, repetition_penalty {params.get('repetition_penalty')}, "
                       f"no_repeat_ngram_size {params.get('no_repeat_ngram_size')}, batch "
                       f"{params.get('caption_batch_size')}, dtype {params.get('dtype')}{ignored}"),
        "post-processing": "normalise, drop repeated phrases" if params.get("postprocess") else "none (raw captions)",
        "text encoder": f"{metrics['encoder']['name']} ({metrics['encoder']['dim']}-d)",
        "probe": (f"logistic regression on L2-normalised embeddings, C chosen on validation from "
                  f"{params.get('probe_cs')} (chosen: {metrics['probe'].get('c')})"),
    }
    return "".join(f"- **{name}**: {value}\n" for name, value in rows.items())


def probe_ci(metrics: Mapping) -> pd.DataFrame:
    """The probe's test scores with their percentile-bootstrap 95 % intervals, one row."""
    probe = metrics["probe"]
    return pd.DataFrame([{name.replace("_", " "): _ci(probe, name) for name in ("accuracy", "macro_f1", "weighted_f1")}],
                        index=pd.Index(["text-only probe (test)"]))


CAPTION_COLUMNS = ["captioner", "prompt", "emotion word", "repetition", "mean words", "distinct", "captions/s"]
SCORE_COLUMNS = ["vote accuracy", "vote macro F1", "probe accuracy", "probe macro F1", "probe val macro F1"]


def split_table(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A :func:`prompt_table` as two narrower tables for a page: what the captions look like (the
    runs only) and what they score (with the majority-class row); blanks where a row has no value."""
    captions = table.loc[table["captioner"].notna(), CAPTION_COLUMNS].astype(object)
    scores = table[SCORE_COLUMNS].astype(object)
    return captions.where(captions.notna(), ""), scores.where(scores.notna(), "")


def prompt_texts(records: Mapping[str, Mapping]) -> str:
    """Each distinct prompt the runs used, by name, with its text (a Markdown list)."""
    prompts = {rec["metrics"]["prompt"]["name"]: rec["metrics"]["prompt"]["text"] for rec in records.values()}
    return "\n".join(f"- **{name}**: `{text}`" for name, text in prompts.items()) + "\n"


def _majority(records: Mapping[str, Mapping]) -> tuple[str, dict] | None:
    from fer_utils.study.compare import always_predicting

    for rec in records.values():
        pred = rec.get("predictions")
        if pred is not None and not pred.empty:
            label, scores = always_predicting(pred["true"])
            return EMOTIONS[label], scores
    return None


def prompt_table(records: Mapping[str, Mapping], digits: int = 3) -> pd.DataFrame:
    """One row per run (captioner, prompt, caption statistics, vote and probe scores, speed), and
    a last row for always predicting the most frequent test class."""
    rows = []
    for name, rec in records.items():
        m = rec["metrics"]
        speed = caption_rate(m)   # a look-up (precomputed) or a draw (simulated) has none
        rows.append({
            "run": name, "captioner": m["captioner"]["name"], "prompt": m["prompt"]["name"],
            "emotion word": m["captions"]["share_emotion_word"], "repetition": m["captions"]["share_repetition"],
            "mean words": m["captions"]["mean_words"], "distinct": m["captions"]["share_distinct"],
            "vote accuracy": m["vote"]["accuracy"], "vote macro F1": m["vote"]["macro_f1"],
            "probe accuracy": m["probe"]["accuracy"], "probe macro F1": m["probe"]["macro_f1"],
            "probe val macro F1": m["val_macro_f1"],
            "captions/s": float("nan") if speed is None else speed,
        })
    majority = _majority(records)
    if majority is not None:
        label, scores = majority
        rows.append({"run": f"majority class (always {label})", "vote accuracy": scores["accuracy"],
                     "vote macro F1": scores["macro_f1"], "probe accuracy": scores["accuracy"],
                     "probe macro F1": scores["macro_f1"]})
    table = pd.DataFrame(rows).set_index("run")
    numeric = table.select_dtypes("number").columns
    table[numeric] = table[numeric].round(digits)
    return table


def _ci(metrics: Mapping, name: str) -> str:
    low, high = (metrics.get("ci95") or {}).get(name) or (None, None)
    return f"{metrics[name]:.3f}" + ("" if low is None else f" [{low:.3f}, {high:.3f}]")


def prompt_interpretation(record: Mapping) -> str:
    """What one run's numbers say (Markdown)."""
    m = record["metrics"]
    kind = _kind(m["captioner"])
    majority = _majority({"run": record})
    base = (f" Always predicting {majority[0]} scores macro F1 {majority[1]['macro_f1']:.3f} "
            f"(accuracy {majority[1]['accuracy']:.3f}).") if majority else ""
    text = (f"{m['captions']['share_emotion_word']:.0%} of the captions name an emotion word and "
            f"{m['captions']['share_repetition']:.0%} repeat a phrase. On the {m['vote']['n']} test images the "
            f"VLM vote (the emotion a caption names, a missing one counted wrong) scores accuracy "
            f"{m['vote']['accuracy']:.3f} and macro F1 {m['vote']['macro_f1']:.3f}; the text-only linear probe on "
            f"the {m['encoder']['dim']}-d caption embeddings, its C chosen on validation, scores macro F1 "
            f"{_ci(m['probe'], 'macro_f1')} and accuracy {_ci(m['probe'], 'accuracy')}.{base}")
    if kind == "meaningless":
        text += (" With captions that describe nothing these are the floor a real captioner must clear: no vote "
                 "(a random model writes no emotion words) and a probe near the majority baseline, which can only "
                 "pick up what the random text happens to encode about the pixels, are the expected result, not a "
                 "failure of the prompt.")
    elif kind == "simulated":
        accuracy = m["captioner"]["identity"].get("accuracy")
        text += (f" The captions were simulated to name the true emotion {accuracy:.0%} of the time: the vote's "
                 "accuracy should sit near that share, and the probe shows how much of the signal survives the "
                 "text encoder.")
    return text + "\n"


def caption_rate(metrics: Mapping) -> float | None:
    """A run's captions per second: this run's, else as measured when its cached captions were
    made; None for a captioner that reads a file or a label, or when nothing recorded a time."""
    if not metrics["captioner"].get("cached", True):
        return None
    made = metrics["throughput"]["captions"]
    return made.get("per_second") or made.get("per_second_when_made")


def costed(records: Mapping[str, Mapping], names) -> bool:
    """Whether every run of ``names`` has a caption rate (:func:`caption_rate`)."""
    return all(caption_rate(records[name]["metrics"]) is not None for name in names)


def comparison_interpretation(records: Mapping[str, Mapping]) -> str:
    """What the prompt comparison can and cannot show, given the captioners its runs used (Markdown)."""
    kinds = {name: _kind(rec["metrics"]["captioner"]) for name, rec in records.items()}
    parts = []
    prompts = [name for name, kind in kinds.items() if kind != "simulated"]
    meaningless = [name for name in prompts if kinds[name] == "meaningless"]
    if prompts and meaningless:
        vals = sorted(records[n]["metrics"]["val_macro_f1"] for n in prompts)
        probes = sorted(records[n]["metrics"]["probe"]["macro_f1"] for n in prompts)
        parts.append(f"The prompt runs used a tiny BLIP-2 with random weights: its captions carry no meaning. The "
                     f"probe's validation macro F1 ranges from {vals[0]:.3f} to {vals[-1]:.3f} over the prompts (test "
                     f"{probes[0]:.3f} to {probes[-1]:.3f}): what a random captioner's text lets a linear model pick up "
                     "from the pixels it was conditioned on, not a property of the prompt, so no prompt is chosen "
                     "here. What the comparison does show is that every prompt runs end to end"
                     + (" and what each costs (captions/s)" if costed(records, prompts) else
                        "; its captions came from the cache without a recorded cost, so it shows no speed")
                     + ". Which prompt helps needs the real BLIP-2 (the full profile).")
    elif prompts:
        best = max(prompts, key=lambda n: records[n]["metrics"]["val_macro_f1"])
        m = records[best]["metrics"]
        parts.append(f"By validation macro F1 of the text-only probe, the best prompt here is **{best}** "
                     f"({m['val_macro_f1']:.3f} on validation; {m['probe']['macro_f1']:.3f} on test, read once).")
    simulated = [n for n, kind in kinds.items() if kind == "simulated"]
    for name in simulated:
        m = records[name]["metrics"]
        parts.append(f"The simulated run ({name}: captions true {m['captioner']['identity'].get('accuracy'):.0%} of "
                     f"the time) is the control: its vote accuracy {m['vote']['accuracy']:.3f} and probe macro F1 "
                     f"{m['probe']['macro_f1']:.3f} show that the pipeline recovers the signal a caption carries.")
    return "\n\n".join(parts) + "\n"


__all__ = ["CAPTION_COLUMNS", "SCORE_COLUMNS", "caption_rate", "captioner_notice", "costed", "comparison_interpretation", "prompt_interpretation", "probe_ci", "prompt_table", "prompt_texts", "run_settings",
           "split_table"]
