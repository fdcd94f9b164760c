"""Time one Muon update of a recipe's matrices: PyTorch's `torch.optim.Muon` against LightBrain's
`BatchedMuon`, which runs the same Newton-Schulz iterations on stacks of same-shaped matrices.

    python bench/muon_step.py                          # the CPU speedrun recipe's 30 matrices
    python bench/muon_step.py train.muon_ns_steps=3    # any section.key=value override

Prints the median time of --steps updates for each, on random gradients, and how far apart their
results are. `bench/train_step.py` times the whole training step.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from recipe_args import add_recipe_arguments, load_recipe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_arguments(parser)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    from lightbrain.models.lightbrain_tiny import LightBrainTiny
    from lightbrain.training.muon import BatchedMuon
    from lightbrain.training.trainer import build_optimizer

    cfg = load_recipe(args, [*args.overrides, "train.optimizer=muon"])
    torch.manual_seed(0)
    model = LightBrainTiny(cfg.model)
    hidden = [p for g in build_optimizer(model, cfg, torch.device("cpu"))[1].param_groups for p in g["params"]]
    grads = [torch.randn_like(p) for p in hidden]
    shapes = sorted({tuple(p.shape) for p in hidden})
    print(f"{Path(args.config).name}: {len(hidden)} matrices of {len(shapes)} shapes {shapes}, "
          f"{torch.get_num_threads()} threads")

    results = {}
    for name, cls in (("torch.optim.Muon", torch.optim.Muon), ("BatchedMuon", BatchedMuon)):
        params = [torch.nn.Parameter(p.detach().clone()) for p in hidden]
        for p, g in zip(params, grads):
            p.grad = g
        opt = cls(params, lr=cfg.train.learning_rate * cfg.train.muon_lr_scale, weight_decay=cfg.train.weight_decay,
                  ns_steps=cfg.train.muon_ns_steps, adjust_lr_fn="match_rms_adamw")
        opt.step()  # the first step allocates the momentum buffers
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - t0)
        results[name] = params
        print(f"{name:>17}: median {1000 * statistics.median(times):.1f} ms per update")
    gap = max((a - b).abs().max().item() for a, b in zip(*results.values()))
    print(f"largest difference between their weights after {args.steps + 1} updates: {gap:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
