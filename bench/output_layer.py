"""Time a recipe's output layer and loss, forward and backward, as a training step runs them: the plain
path (lm_head, then F.cross_entropy) against `ChunkedCrossEntropy` at several chunk sizes, each compiled,
under the recipe's autocast, on random activations.

    python bench/output_layer.py                        # the CPU speedrun recipe (a step's tokens x 8,192)
    python bench/output_layer.py --rows 256 512 1024    # the chunk sizes to try

Prints one bare matrix product of the layer's shape for scale, then the median of --steps passes for each
version. `bench/train_step.py --against "model.loss_chunk_rows=N"` times what a chunk size does to a whole step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from recipe_args import add_recipe_arguments, load_recipe


def median_ms(fn, steps: int) -> float:
    for _ in range(3):  # compile and warm up
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_arguments(parser)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rows", type=int, nargs="+", default=[256, 512, 1024])
    args = parser.parse_args()

    from lightbrain.models.lightbrain_tiny import ChunkedCrossEntropy
    from lightbrain.training.utils import autocast_context, pick_dtype

    cfg = load_recipe(args, args.overrides)
    t, m = cfg.train, cfg.model
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    device = torch.device("cpu")
    dtype = pick_dtype(t.dtype, device)
    tokens = t.batch_size * m.block_size
    torch.manual_seed(0)
    x0 = torch.randn(tokens, m.n_embd)
    weight = (0.02 * torch.randn(m.vocab_size, m.n_embd)).requires_grad_()
    targets = torch.randint(0, m.vocab_size, (tokens,))
    print(f"{tokens:,} tokens x {m.vocab_size:,} vocabulary, width {m.n_embd}, {dtype}, "
          f"{torch.get_num_threads()} threads")

    a = torch.randn(tokens, m.n_embd, dtype=torch.bfloat16)
    b = torch.randn(m.n_embd, m.vocab_size, dtype=torch.bfloat16)
    print(f"one bf16 matrix product of that shape: {median_ms(lambda: a @ b, args.steps):.1f} ms")

    def plain(x, w, y):
        return F.cross_entropy(F.linear(x, w).float(), y, ignore_index=-1)

    versions = [("plain (lm_head + F.cross_entropy)", plain)]
    for rows in args.rows:
        versions.append((f"ChunkedCrossEntropy, {rows} rows",
                         lambda x, w, y, rows=rows: ChunkedCrossEntropy.apply(x, w, y, rows)))
    for name, fn in versions:
        compiled = torch.compile(fn)

        def step():
            x = x0.clone().requires_grad_()
            with autocast_context(device, dtype):
                loss = compiled(x, weight, targets)
            loss.backward()
            weight.grad = None

        print(f"{name}: {median_ms(step, args.steps):.1f} ms forward and backward")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
