"""Benchmark VGG training with its first dense layer folded (fer_utils.models.folding) vs plain.

In one process, from the same random weights (:func:`fer_utils.models.create_model`), it times
training steps (forward, cross-entropy, backward, Adam step with the fused kernels ``fit`` uses) on
random ``--image-size`` px batches for (a) the plain torchvision layers and (b) the same model
after :func:`~fer_utils.models.folding.fold_replicated_linear`, interleaved (a, b, a, b, ...), the
fastest of ``--repeats`` passes of ``--steps`` steps each kept. It also reports how far the two
have drifted apart after those steps (losses; the unfolded first dense layer against the plain
one), beside the drift of the plain model run on one thread instead of two: floating-point
order alone. Example (the default profile's VGG16 setting)::

    python benchmarks/bench_vgg_fold.py --image-size 32 --batch-size 32 --json out.json

Below 64 px VGG16's last map is 1 x 1 and the fold applies; at 64 px and more nothing is folded
and the script says so.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys

import torch
from torch.nn import functional as F

from fer_utils.bench import best_seconds
from fer_utils.models import create_model
from fer_utils.models.folding import fold_replicated_linear
from fer_utils.training.train import TrainConfig, make_optimizer


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4, help="training steps per timed pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    initial = create_model(args.model, num_classes=7)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=g),
                torch.randint(0, 7, (args.batch_size,), generator=g)) for _ in range(args.steps)]
    config = TrainConfig(lr=1e-4, device="cpu")

    def trainer(fold: bool):
        model = copy.deepcopy(initial)
        unfold = fold_replicated_linear(model, args.image_size) if fold else None
        if fold and unfold is None:
            sys.exit(f"{args.model} at {args.image_size} px: nothing to fold (the last map is not 1 x 1)")
        optimizer = make_optimizer(model, config)
        losses = []

        def steps():
            model.train()
            for i, (x, y) in enumerate(batches):
                torch.manual_seed(100 + i)  # the same dropout masks for both
                optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
        return model, unfold, steps, losses

    plain, _, plain_steps, plain_losses = trainer(False)
    folded, unfold, folded_steps, folded_losses = trainer(True)
    trained = {"plain": sum(p.numel() for p in plain.parameters()),
               "folded": sum(p.numel() for p in folded.parameters())}
    plain_steps(), folded_steps()  # warm-up: the allocator, oneDNN's kernel choice
    seconds = best_seconds({"plain": plain_steps, "folded": folded_steps}, args.repeats)
    unfold()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    one_thread, _, one_steps, one_losses = trainer(False)
    for _ in range(1 + args.repeats):
        one_steps()
    torch.set_num_threads(threads)

    def drift(model) -> float:
        a, b = model.features[3][0].weight, plain.features[3][0].weight
        return float(((a - b).abs() > 1e-6).float().mean())

    step = {name: s / args.steps for name, s in seconds.items()}
    result = {
        "model": args.model, "image_size": args.image_size, "batch_size": args.batch_size,
        "torch_threads": threads, "steps_per_pass": args.steps, "repeats": args.repeats,
        "plain_s_per_step": step["plain"], "folded_s_per_step": step["folded"],
        "speedup": step["plain"] / step["folded"],
        "plain_img_s": args.batch_size / step["plain"], "folded_img_s": args.batch_size / step["folded"],
        "parameters_trained": trained,
        "max_loss_difference_folded": max(abs(a - b) for a, b in zip(folded_losses, plain_losses)),
        "max_loss_difference_one_thread": max(abs(a - b) for a, b in zip(one_losses, plain_losses)),
        "fc1_share_of_weights_apart_folded": drift(folded),
        "fc1_share_of_weights_apart_one_thread": drift(one_thread),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
