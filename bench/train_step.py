"""Time one training step of a recipe (forward, backward, optimizer) on random tokens, as the trainer runs it.

    python bench/train_step.py                                   # the CPU speedrun recipe, compiled
    python bench/train_step.py --return-logits                   # as before the trainer asked for the loss alone
    python bench/train_step.py --profile train.muon_ns_steps=3   # plus the operators that took the time
    python bench/train_step.py --against "model.n_head=8"        # two versions timed in turn, one process
    python bench/train_step.py --short                           # a step of the run's first part (short_window)

Prints the first step's time (which includes compiling), the median of the next --steps steps, and
training tokens per second. A machine's speed can drift by several percent over minutes, so compare two
versions with --against, which times them in turn in one process, rather than with two separate runs.
The speedrun rows in docs/experiments.md that cite step times come from here.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from recipe_args import add_recipe_arguments, load_recipe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_arguments(parser)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--return-logits", action="store_true", help="ask the model for the logits too")
    parser.add_argument("--eager", action="store_true", help="do not compile, whatever the recipe says")
    parser.add_argument("--profile", action="store_true", help="print the operators of 10 more steps")
    parser.add_argument("--short", action="store_true", help="time a step of the run's first part, whose windows "
                        "are cut into pieces of train.short_window tokens (the first, if a list; the same tokens a "
                        "step)")
    parser.add_argument("--against", metavar="OVERRIDES", help="also time the recipe with these overrides "
                        "(quoted, space-separated), in blocks of 4 steps taken in turn with the first")
    args = parser.parse_args()

    from lightbrain.models.lightbrain_tiny import LightBrainTiny
    from lightbrain.training.trainer import build_optimizer
    from lightbrain.training.utils import autocast_context, pick_dtype

    def make_step(overrides: list[str]):
        cfg = load_recipe(args, overrides)
        t, device = cfg.train, torch.device("cpu")
        torch.manual_seed(0)
        model = LightBrainTiny(cfg.model)
        optimizers = build_optimizer(model, cfg, device)
        run_model = torch.compile(model) if t.compile and not args.eager else model
        ctx = autocast_context(device, pick_dtype(t.dtype, device))
        rows, length = t.batch_size, cfg.model.block_size
        if args.short:
            stages = t.short_window_stages()
            if not stages:
                parser.error(f"--short: {args.config} with {overrides or 'no overrides'} sets no train.short_window")
            rows, length = rows * length // stages[0][0], stages[0][0]  # the first stage's pieces
        x = torch.randint(0, cfg.model.vocab_size, (rows, length))
        y = torch.randint(0, cfg.model.vocab_size, (rows, length))

        def step() -> float:
            start = time.perf_counter()
            with ctx:
                _, loss = run_model(x, y, return_logits=args.return_logits)
            loss.backward()
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            for opt in optimizers:
                opt.step()
                opt.zero_grad(set_to_none=True)
            return time.perf_counter() - start

        return step, cfg

    runs = {" ".join(args.overrides) or "as configured": make_step(args.overrides)}
    if args.against is not None:
        runs[args.against] = make_step([*args.overrides, *args.against.split()])
    first = {name: step() for name, (step, _) in runs.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    # Blocks of a few steps in turn: the machine's speed drifts by several percent over minutes, and
    # interleaving makes that drift fall on both sides of a comparison alike.
    for _ in range(math.ceil(args.steps / 4)):
        for name, (step, _) in runs.items():
            times[name] += [step() for _ in range(4)]
    step, cfg = next(iter(runs.values()))  # the first version: its line heads the report, --profile runs it
    print(f"{Path(args.config).name} (compiled: {cfg.train.compile and not args.eager}, logits returned: "
          f"{args.return_logits}, {torch.get_num_threads()} threads)")
    medians = {}
    for name, (_, run_cfg) in runs.items():
        medians[name] = median = statistics.median(times[name])
        tokens = run_cfg.train.batch_size * run_cfg.model.block_size
        print(f"{name}: first step {first[name]:.1f} s; median of {len(times[name])} steps {median * 1000:.0f} ms; "
              f"{tokens / median:,.0f} training tokens/s")
    if args.against is not None:
        base, other = medians.values()
        print(f"{args.against!r} takes {other / base:.3f}x the time of a step")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(10):
                step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=50))
    return 0


if __name__ == "__main__":
    sys.exit(main())
