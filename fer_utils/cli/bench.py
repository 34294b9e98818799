"""``fer bench``: the project's speed on this machine, each figure beside its baseline (fer_utils.bench)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

from fer_utils.bench import PARTS
from fer_utils.options import COMPILE_MODES

DEVICES = ("auto", "cpu", "cuda")
CAPTIONERS = ("tiny", "real-size")

# Sizes per part: the full run and --quick (what the test uses: seconds on two shared cores).
FULL = {"model": "densenet121", "image_size": 100, "n": 256, "naive_n": 64, "batch_size": 64, "epochs": 2,
        "val_n": 32, "repeats": 3, "caption_n": 64, "caption_naive_n": 16, "new_tokens": 30, "caption_batches": None,
        "study_only": None, "web_requests": 200, "web_seconds": 60.0, "web_clients": 8}
QUICK = {"model": "resnet18", "image_size": 32, "n": 16, "naive_n": 4, "batch_size": 8, "epochs": 2,
         "val_n": 4, "repeats": 1, "caption_n": 4, "caption_naive_n": 2, "new_tokens": 4, "caption_batches": (4,),
         "study_only": ("01_data",), "web_requests": 20, "web_seconds": 10.0, "web_clients": 2}


def parse_only(value: str | None) -> list[str]:
    """``features,training`` -> the parts in :data:`~fer_utils.bench.PARTS` order; None: every part."""
    if value is None:
        return list(PARTS)
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in PARTS]
    if unknown or not names:
        raise click.BadParameter(f"unknown part(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
                                 f"choose from {', '.join(PARTS)} (comma-separated)", param_hint="--only")
    return [part for part in PARTS if part in names]


def _measure(part: str, sizes: dict, device: str, captioner: str, workers, amp: bool, bundles, echo,
             torch_compile: str = "none") -> dict:
    if part == "features":
        from fer_utils.bench.features import measure_features

        return measure_features(sizes["model"], device, sizes["n"], sizes["naive_n"], sizes["image_size"],
                                batch_size=sizes["batch_size"], num_workers=workers,
                                fp16=amp and device.startswith("cuda"), repeats=sizes["repeats"])
    if part == "training":
        from fer_utils.bench.training import measure_training

        return measure_training(sizes["model"], device, sizes["n"], sizes["val_n"], sizes["image_size"],
                                batch_size=sizes["batch_size"], epochs=sizes["epochs"],
                                num_workers=0 if workers == "auto" else workers, amp=amp,
                                repeats=max(1, sizes["repeats"] - 1), torch_compile=torch_compile)
    if part == "captions":
        from fer_utils.bench.captions import measure_captions

        return measure_captions(captioner, device=device, batch_sizes=sizes["caption_batches"], n=sizes["caption_n"],
                                naive_n=sizes["caption_naive_n"], new_tokens=sizes["new_tokens"],
                                repeats=max(1, sizes["repeats"] - 1))
    if part == "study":
        from fer_utils.bench.study import measure_study

        return measure_study("quick", only=sizes["study_only"], echo=echo)
    from fer_utils.bench.web import measure_web

    return measure_web(bundles or None, echo=echo, requests=sizes["web_requests"], seconds=sizes["web_seconds"],
                       baseline_requests=min(50, sizes["web_requests"]), clients=sizes["web_clients"])


def summary_rows(part: str, result: dict) -> list[tuple[str, str, str]]:
    """(what, measured, ratio) rows of one part's result for the printed table."""
    def rate(value):
        return f"{value:,.1f} img/s"

    if "error" in result:
        return [(part, "not measured", result["error"])]
    if part == "features":
        return [(f"features: naive loop ({result['model']}, {result['image_size']} px)",
                 rate(result["a_naive_img_s"]), ""),
                (f"features: extract_features (batch {result['batch_size']})", rate(result["b_extract_features_img_s"]),
                 f"{result['b_over_a']:.2f} x naive, {result['b_over_c']:.2f} of forward alone"),
                ("features: forward alone (tensors made beforehand)", rate(result["c_forward_only_img_s"]), "")]
    if part == "training":
        rows = [(f"training: fit ({result['model']}, batch {result['batch_size']}, {result['num_workers']} workers)",
                 rate(result["fit_img_s"]), f"{result['fit_over_no_loading']:.2f} of no data loading"),
                ("training: train step, no data loading", rate(result["no_loading_img_s"]), "")]
        check = result.get("step_vs_cpu")
        if check:
            rows.append(("training: one step vs the CPU's float32", f"loss diff {check['loss_abs_diff']:.1e}",
                         f"gradients: relative error {check['grad_rel_err_max']:.1e} at most "
                         f"({check['grad_rel_err_max_param']}), median {check['grad_rel_err_median']:.1e}"))
        return rows
    if part == "captions":
        top = result["best_batch"]
        return [(f"captions: batch 1 ({result['architecture']}, {result['new_tokens']} tokens)",
                 rate(result["batch1_images_per_s"]), ""),
                (f"captions: batch {top} (best)", rate(result["best_images_per_s"]),
                 f"{result['best_over_batch1']:.2f} x batch 1")]
    if part == "study":
        return [(f"study ({result['profile']}): cold", f"{result['cold_s']:.1f} s", f"{result['cold_runs']} runs"),
                ("study: warm (nothing changed)", f"{result['warm_s']:.1f} s",
                 f"{result['warm_over_cold']:.2f} of cold")]
    rows = []
    for bundle in result["results"]:
        base = bundle["in_process"]
        rows.append((f"web: in process ({bundle['kind']} {bundle['model']})", f"p50 {base['p50_ms']:.1f} ms", ""))
        for m in bundle["http"]:
            rows.append((f"web: POST /api/predict, {m['clients']} client(s)",
                         f"p50 {m['p50_ms']:.1f} ms, {m['requests_per_s']:.1f} req/s",
                         f"{m['ratio_to_in_process_p50']:.2f} x in process"))
    return rows


def print_table(report: dict) -> None:
    m = report["machine"]
    click.echo(f"\n{m['date']}  {m['cpu']}, {m['cpus_usable']} of {m['cpu_count']} CPUs, {m['ram_gib']} GiB RAM, "
               f"torch {m['torch']} ({m['torch_threads']} threads), CUDA {m['cuda'] or '-'}, GPU {m['gpu'] or 'none'}")
    rows = [row for part, result in report["results"].items() for row in summary_rows(part, result)]
    width = max(len(row[0]) for row in rows)
    value_width = max(len(row[1]) for row in rows)
    for what, value, ratio in rows:
        click.echo(f"{what:<{width}}  {value:>{value_width}}  {ratio}")


def _workers(value: str):
    if value == "auto":
        return value
    try:
        workers = int(value)
    except ValueError:
        workers = -1
    if workers < 0:
        raise click.BadParameter(f"'auto' or a number >= 0, got {value!r}", param_hint="--workers")
    return workers


@click.command("bench")
@click.option("--only", default=None, metavar="PARTS",
              help=f"Comma-separated parts to measure (default: all): {', '.join(PARTS)}.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--model", default=None, help="CNN for features and training (densenet121, resnet18, vgg16; "
              "default densenet121, --quick resnet18); 'tiny' or 'real-size' choose the captioner instead.")
@click.option("--captioner", type=click.Choice(CAPTIONERS), default="tiny", show_default=True,
              help="BLIP-2 for captions: the tiny one, or random weights of blip2-flan-t5-xl's size (CUDA only).")
@click.option("--image-size", type=click.IntRange(16, 1024), default=None, help="Model input side (default 100).")
@click.option("--n", "n", type=click.IntRange(2, None), default=None,
              help="Images per measurement (features, training, batched captions) and requests per web setting "
                   "(default 256, captions 64, web 200).")
@click.option("--batch-size", type=click.IntRange(1, None), default=None, help="Batch size (default 64).")
@click.option("--workers", default="auto", show_default=True,
              help="DataLoader workers: 'auto' or a number (training: 'auto' means 0, fit's default).")
@click.option("--threads", type=click.IntRange(1, None), default=None,
              help="torch intra-op threads (default: torch's choice; 1 is fastest on a busy small machine).")
@click.option("--amp/--no-amp", default=True, show_default=True, help="Mixed precision on CUDA (bf16).")
@click.option("--compile", "torch_compile", type=click.Choice(COMPILE_MODES), default="none", show_default=True,
              help="training: torch.compile mode of the model, in fit and in the baseline alike "
                   "(reduce-overhead: CUDA graphs on a GPU).")
@click.option("--bundle", "bundles", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Model bundle for web (repeatable; default: the project's best CNN and fused bundles).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the machine and every measurement to this JSON file.")
@click.option("--quick", is_flag=True, help="Tiny sizes (resnet18, 32 px, 16 images, tiny captioner, the study's "
              "data page only): checks that every part runs, in seconds.")
def bench_cmd(only, device, model, captioner, image_size, n, batch_size, workers, threads, amp, torch_compile,
              bundles, json_out, quick):
    """Measure this machine: each figure beside its baseline in the same process.

    \b
    features  naive per-image loop vs extract_features vs the forward pass alone
    training  fit on images (data sets, DataLoader) vs the train step on tensors made beforehand
    captions  BLIP-2 captioning at batch 1 vs batched
    study     the quick study cold in a scratch project, then again unchanged (minutes)
    web       POST /api/predict through fer serve on 127.0.0.1 vs the same prediction in process

    Prints a table; --json OUT writes the machine description and every raw figure. A part that
    cannot run here (no bundle for web, no CUDA for the real-size captioner) is reported as not
    measured and the exit status is 1.
    """
    parts = parse_only(only)
    workers = _workers(workers)
    if model in CAPTIONERS:  # `--model real-size`, as benchmarks/bench_captions.py spells it
        captioner, model = model, None
    from fer_utils.models.runtime import resolve_device

    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise click.BadParameter("CUDA is not available on this machine", param_hint="--device")
    device = str(resolve_device(device))  # "auto" -> cuda or cpu: AMP applies on CUDA only
    sizes = dict(QUICK if quick else FULL)
    for key, value in (("model", model), ("image_size", image_size), ("n", n), ("batch_size", batch_size)):
        if value is not None:
            sizes[key] = value
    if n is not None:
        sizes["caption_n"] = sizes["web_requests"] = n
    from fer_utils.models import list_models

    if sizes["model"] not in list_models():
        raise click.BadParameter(f"unknown model {sizes['model']!r}; choose from {', '.join(list_models())}",
                                 param_hint="--model")
    if threads:
        import torch

        torch.set_num_threads(threads)
    from fer_utils.bench import machine
    from fer_utils.errors import FERError

    report = {"command": "fer bench", "quick": quick, "machine": machine(), "sizes": sizes, "results": {}}
    for part in parts:
        click.echo(f"{part} ...", err=True)
        start = time.perf_counter()
        try:
            result = _measure(part, sizes, device, captioner, workers, amp, bundles,
                              echo=lambda text: click.echo(f"  {text}", err=True), torch_compile=torch_compile)
        except (FERError, ImportError, RuntimeError) as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        result["wall_s"] = time.perf_counter() - start
        report["results"][part] = result
    print_table(report)
    if json_out:
        json_out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        click.echo(f"wrote {json_out}", err=True)
    if any("error" in result for result in report["results"].values()):
        raise SystemExit(1)
