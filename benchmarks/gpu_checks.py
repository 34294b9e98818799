"""Every GPU measurement issues 9 and 14 ask for, in one process, within a time budget.

A session lent a GPU machine has about 15 minutes of device time for everything: this script is
the one call to make there. It runs the project's own measurement functions (``fer_utils.bench``:
the same code as ``fer bench``; no CLI, so no web or notebook packages are needed) with random
weights at real size, one step after another, each in its own ``try`` (an error is recorded and
the next step runs), stops starting steps when ``--budget-s`` is spent, and writes every result
as it comes to ``--out/gpu_checks.json``:

1. one DenseNet121 training step on the GPU (bf16 autocast, channels-last) against the CPU's
   float32 eager step: loss and gradient agreement (issue 14);
2. ``extract_features`` vs the forward pass alone, DenseNet121 / ResNet18 / VGG16 at 224 px,
   batch 256, 8 workers (issue 14: >= 0.95 of forward alone);
3. the two targets: ``fit`` images/s of DenseNet121 at 224 px, batch 64, 8 workers,
   ``torch.compile(mode="reduce-overhead")`` (CUDA graphs) (issue 14: >= 1,500 img/s), and BLIP-2
   at flan-t5-xl size (bf16, 30 new tokens each), batch 1 vs 256 / 512 / 1024, with a static
   cache + compiled decoding (issue 9: >= 400 img/s);
4. what each lever bought: DenseNet121 ``fit`` with 0 and with 8 workers, uncompiled; BLIP-2 with
   plain ``generate``;
5. CLIP ViT-L/14's text tower (CLIPTextModel at its size, random weights, 20-token captions), then
   ResNet18 and VGG16 ``fit`` with 8 workers (the real-data page's wall-time table).

Before each step the peak-memory counter starts again and ``fit``'s process-wide deterministic
mode is switched off (a training step switches it on for itself). The compiled steps need a C
compiler and Python.h on the machine; where either is missing they are recorded as skipped with
that reason, before any time is spent on them.

Each result also carries ``estimated_s``: the seconds all of RAF-DB (15,339 images; a training
epoch: its 12,271 training images) and of AffectNet (about 290,000) would take at that rate.

On a device machine (its image has torch, torchvision, transformers and pandas)::

    PYTHONPATH=. PYTHONUNBUFFERED=1 python3 benchmarks/gpu_checks.py --out $OUT --budget-s 480

Here, to check that every step runs (tiny sizes, the tiny captioner)::

    python benchmarks/gpu_checks.py --quick --device cpu --out /tmp/gpu-checks
"""
from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from pathlib import Path

CNNS = ("densenet121", "resnet18", "vgg16")
# images a full pass over each data set costs: RAF-DB's 12,271 train + 3,068 test (a training
# epoch: the train split), AffectNet about 290,000 (issue 14's figure)
DATA_SETS = {"RAF-DB": {"all": 15_339, "train": 12_271}, "AffectNet": {"all": 290_000, "train": 290_000}}
RATES = {"b_extract_features_img_s": "all", "fit_img_s": "train", "best_images_per_s": "all",
         "batched_sentences_per_s": "all"}


def plan(quick: bool, device: str) -> list[tuple[str, callable]]:
    """``(name, fn)`` per step, in order; ``fn()`` returns a JSON-ready dict."""
    from fer_utils.bench.captions import measure_captions
    from fer_utils.bench.features import measure_features
    from fer_utils.bench.training import measure_training, step_agreement

    size = 32 if quick else 224
    n_features, n_train = (16, 16) if quick else (4096, 2048)
    feature_batch, train_batch = (8, 8) if quick else (256, 64)
    workers = 0 if quick else 8
    steps = [("step_vs_cpu", lambda: step_agreement(
        "resnet18" if quick else "densenet121", device, size, 4 if quick else 16, amp=True, channels_last=True))]
    for model in CNNS[1:2] if quick else CNNS:
        steps.append((f"features {model}", lambda model=model: measure_features(
            model, device, n=n_features, naive_n=4 if quick else 64, image_size=size, batch_size=feature_batch,
            num_workers=workers, fp16=device == "cuda", repeats=1 if quick else 3)))
    def training(model: str, n_workers: int, mode: str):
        return (f"training {model} workers={n_workers} compile={mode}", lambda: measure_training(
            model, device, n=n_train, val_n=16 if quick else 256, image_size=size, batch_size=train_batch,
            epochs=2 if quick else 3, num_workers=n_workers, torch_compile=mode, repeats=1 if quick else 2))

    captioner = "tiny" if quick else "real-size"
    batches = [4] if quick else [256, 512, 1024]

    def captions(static: bool):
        return (f"captions {captioner} static_cache+compile={static}", lambda: measure_captions(
            captioner, device=device, batch_sizes=batches, n=8 if quick else 1024, naive_n=2 if quick else 8,
            new_tokens=4 if quick else 30, static_cache=static, compile=static, repeats=1 if quick else 2))

    if quick:
        return steps + [training("resnet18", 0, "none"), captions(False), captions(True),
                        ("clip text tower", lambda: clip_text_tower(device, quick))]
    # The issues' targets first (DenseNet121 fit >= 1,500 img/s; captions >= 400 img/s), so that a
    # budget cut leaves the least important figures out: then the levers' account (0 and 8 workers
    # without compile), then the rates of the real-data page's wall-time table.
    return steps + [training("densenet121", workers, "reduce-overhead"), captions(True),
                    training("densenet121", 0, "none"), training("densenet121", workers, "none"), captions(False),
                    ("clip text tower", lambda: clip_text_tower(device, quick)),
                    training("resnet18", workers, "none"), training("vgg16", workers, "none")]


def clip_text_tower(device: str, quick: bool) -> dict:
    """Sentences/s of CLIP's text tower at ViT-L/14's size (768 wide, 12 layers, 12 heads; random
    weights, bf16 on CUDA) on 20-token inputs, batch 1 vs batch 1024: the original's text feature
    (``pooler_output``)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from fer_utils.bench import best_seconds, cuda_sync, peak_memory_mib
    from fer_utils.models.runtime import resolve_device

    target = resolve_device(device)
    width, layers = (64, 2) if quick else (768, 12)
    config = CLIPTextConfig(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                            num_attention_heads=max(1, width // 64), projection_dim=width, max_position_embeddings=77)
    dtype = torch.bfloat16 if target.type == "cuda" else torch.float32
    model = CLIPTextModel(config).to(target, dtype).eval()
    sync = cuda_sync(target)
    batch = 16 if quick else 1024
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, config.vocab_size - 1, (batch, 20), generator=g).to(target)
    ids[:, -1] = config.vocab_size - 1  # the end token, where pooler_output is read

    def encode(rows: int, per_call: int):
        def run():
            with torch.inference_mode():
                for i in range(0, rows, per_call):
                    model(input_ids=ids[i:i + per_call]).pooler_output.float()
        return run

    single = min(batch, 16 if quick else 64)
    encode(single, 1)(), encode(batch, batch)()  # warm-up
    seconds = best_seconds({"batch1": encode(single, 1), "batched": encode(batch, batch)}, 1 if quick else 3, sync)
    rates = {"batch1": single / seconds["batch1"], "batched": batch / seconds["batched"]}
    return {"device": str(target), "dtype": str(dtype).removeprefix("torch."), "width": width, "layers": layers,
            "tokens": 20, "batch": batch, "batch1_sentences_per_s": rates["batch1"],
            "batched_sentences_per_s": rates["batched"], "x_batch1": rates["batched"] / rates["batch1"],
            **peak_memory_mib(target)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for gpu_checks.json")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--budget-s", type=float, default=480.0, help="start no step after this many seconds")
    parser.add_argument("--only", default=None, help="run only the steps whose name contains this text")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that every step runs")
    args = parser.parse_args(argv)

    from fer_utils.bench import machine

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    toolchain = compile_toolchain()
    report = {"machine": machine(), "quick": args.quick, "compile_toolchain": toolchain or "ok", "steps": {}}

    def save():
        (out / "gpu_checks.json").write_text(json.dumps(report, indent=2, default=str) + "\n")

    start = time.perf_counter()
    for name, fn in plan(args.quick, args.device):
        if args.only and args.only not in name:
            continue
        used = time.perf_counter() - start
        compiles = "compile=reduce-overhead" in name or "compile=True" in name
        if used > args.budget_s or (compiles and toolchain):
            report["steps"][name] = {"skipped": f"budget of {args.budget_s:.0f} s spent ({used:.0f} s)"
                                     if used > args.budget_s else toolchain}
            save()
            print(f"[{used:6.1f} s] {name}: skipped ({report['steps'][name]['skipped']})", flush=True)
            continue
        print(f"[{used:6.1f} s] {name} ...", flush=True)
        fresh_state()
        t0 = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:  # recorded; the next step still runs
            result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=4)}
        result["wall_s"] = time.perf_counter() - t0
        result["estimated_s"] = estimates(result)
        report["steps"][name] = result
        save()
        print(f"          {summary(result)}", flush=True)
        try:
            import torch

            torch._dynamo.reset()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            pass
    print(f"done in {time.perf_counter() - start:.0f} s: {out / 'gpu_checks.json'}")
    return report


def compile_toolchain() -> str | None:
    """Why ``torch.compile`` cannot build its kernels here (Inductor and Triton compile C with the
    system's compiler against Python's headers), or None when both are present."""
    import shutil
    import sysconfig

    missing = [what for what, ok in (
        ("a C compiler (cc or gcc on PATH)", shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")),
        ("Python.h (the python3-dev headers)", Path(sysconfig.get_paths()["include"], "Python.h").exists()))
        if not ok]
    return f"torch.compile needs {' and '.join(missing)}, missing on this machine" if missing else None


def fresh_state() -> None:
    """What one step leaves behind must not change the next one's figures: the peak-memory counter
    starts again (each step reports its own peak), and the deterministic mode that ``fit`` switches
    on for the whole process (``fer_utils.training.repro.seed_everything``) is switched off again, with
    cuDNN's autotuner back on, for the steps that do not train (a training step sets its own)."""
    import torch

    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = True
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def estimates(result: dict) -> dict:
    """Seconds a whole data set would take at the step's measured rate: extraction, captioning and
    text embedding over all its images, one training epoch over its training images."""
    out = {}
    for key, split in RATES.items():
        rate = result.get(key)
        if isinstance(rate, (int, float)) and rate > 0:
            out[key] = {name: sizes[split] / rate for name, sizes in DATA_SETS.items()}
    return out


def summary(result: dict) -> str:
    """One line of the figures that answer the issues' targets."""
    if "error" in result:
        return result["error"]
    keys = ("grad_rel_err_max", "loss_abs_diff", "b_extract_features_img_s", "c_forward_only_img_s", "b_over_c",
            "fit_img_s", "no_loading_img_s", "fit_over_no_loading", "batch1_images_per_s", "best_images_per_s",
            "best_batch", "batch1_sentences_per_s", "batched_sentences_per_s", "peak_cuda_allocated_mib", "wall_s")
    return ", ".join(f"{k} {result[k]:.4g}" if isinstance(result[k], float) else f"{k} {result[k]}"
                     for k in keys if k in result)


if __name__ == "__main__":
    main()
