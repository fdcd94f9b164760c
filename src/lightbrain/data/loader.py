"""Batches of (input, target) windows from a token file.

Training reads non-overlapping windows of block_size + 1 tokens in a shuffled order, epoch by
epoch, without replacement, and each DDP rank takes its own share of every epoch. The sampler's
whole state is two integers (epoch, position), so a resumed run sees exactly the batches the
interrupted one would have seen.

An anneal (`BatchSampler.set_repeats`) weights sources for the rest of a run: from then on each epoch
holds every window of a named stretch of the file n times, in one shuffled order.
"""

from __future__ import annotations

import numpy as np
import torch

from lightbrain.data.token_files import TokenFile


class DataTooSmallError(ValueError):
    pass


def _check_size(tokens: np.ndarray, block_size: int, what: str) -> None:
    if len(tokens) < block_size + 1:
        raise DataTooSmallError(
            f"{what} has {len(tokens)} tokens, fewer than one window of block_size + 1 = {block_size + 1}; "
            "use more data or a smaller model.block_size"
        )


class BatchSampler:
    """Shuffled, sharded, resumable windows from one split."""

    def __init__(self, data: TokenFile | np.ndarray, block_size: int, batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, name: str = "train"):
        self.tokens = data.tokens if isinstance(data, TokenFile) else np.asarray(data)
        _check_size(self.tokens, block_size, f"the {name} split")
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        n_windows = (len(self.tokens) - 1) // block_size
        self.n_windows = n_windows
        # Short splits (fewer windows than a batch on each rank) fall back to overlapping windows.
        self.overlapping = n_windows < batch_size * world_size
        self.epoch = 0
        self.position = 0
        self.repeats: list[tuple[int, int, int]] = []  # (start, end, n): windows starting there appear n times
        self._order = self._epoch_order()

    def _epoch_order(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.overlapping:
            starts = rng.integers(0, len(self.tokens) - self.block_size, size=self.batch_size * self.world_size * 64)
        else:
            # a random offset each epoch so window edges move, then a permutation of whole windows
            offset = int(rng.integers(0, self.block_size)) if (len(self.tokens) - 1) % self.block_size else 0
            if (len(self.tokens) - 1 - offset) // self.block_size < self.batch_size * self.world_size:
                offset = 0  # the offset would cost the one window that makes a whole batch: keep every window
            n = (len(self.tokens) - 1 - offset) // self.block_size
            starts = offset + rng.permutation(n) * self.block_size
            if self.repeats:
                counts = np.ones(len(starts), dtype=np.int64)
                for lo, hi, times in self.repeats:
                    counts[(starts >= lo) & (starts < hi)] = times
                starts = rng.permutation(np.repeat(starts, counts))
        usable = len(starts) - len(starts) % (self.batch_size * self.world_size)
        return starts[:usable][self.rank::self.world_size]

    def next_starts(self) -> np.ndarray:
        if self.position + self.batch_size > len(self._order):
            self.epoch += 1
            self.position = 0
            self._order = self._epoch_order()
        starts = self._order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return starts

    def set_repeats(self, repeats: list[tuple[int, int, int]]) -> None:
        """From the next batch on, windows starting in [start, end) appear n times per epoch, for each
        (start, end, n); a new epoch begins at once. Overlapping-window sampling ignores this."""
        self.repeats = [(int(lo), int(hi), int(n)) for lo, hi, n in repeats]
        self.epoch += 1
        self.position = 0
        self._order = self._epoch_order()

    def next_batch(self, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        return windows_to_batch(self.tokens, self.next_starts(), self.block_size, device)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "repeats": [list(r) for r in self.repeats]}

    def load_state_dict(self, state: dict) -> None:
        self.seed = int(state.get("seed", self.seed))
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.repeats = [tuple(int(v) for v in r) for r in state.get("repeats", [])]
        self._order = self._epoch_order()


def windows_to_batch(tokens: np.ndarray, starts: np.ndarray, block_size: int,
                     device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    rows = np.stack([np.asarray(tokens[s:s + block_size + 1], dtype=np.int64) for s in starts])
    batch = torch.from_numpy(rows)
    x, y = batch[:, :-1], batch[:, 1:]
    if torch.device(device).type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.contiguous().to(device), y.contiguous().to(device)


def random_batch(tokens: np.ndarray, block_size: int, batch_size: int, generator: np.random.Generator,
                 device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random windows (with replacement), for quick loss estimates."""
    _check_size(tokens, block_size, "the split")
    starts = generator.integers(0, len(tokens) - block_size, size=batch_size)
    return windows_to_batch(tokens, starts, block_size, device)


def sequential_batches(tokens: np.ndarray, block_size: int, batch_size: int, device: str | torch.device = "cpu"):
    """Every token of a split exactly once as a prediction target: non-overlapping windows, the last one
    shortened, so whole-split loss and bits per byte count each token once. Yields (x, y) where padded
    targets are -1 (ignored by the loss)."""
    n = len(tokens)
    if n < 2:
        raise DataTooSmallError(f"the split has {n} tokens; at least 2 are needed to score anything")
    starts = list(range(0, n - 1, block_size))
    for i in range(0, len(starts), batch_size):
        chunk = starts[i:i + batch_size]
        x = np.zeros((len(chunk), block_size), dtype=np.int64)
        y = np.full((len(chunk), block_size), -1, dtype=np.int64)
        for row, s in enumerate(chunk):
            window = np.asarray(tokens[s:min(s + block_size + 1, n)], dtype=np.int64)
            x[row, :len(window) - 1] = window[:-1]
            y[row, :len(window) - 1] = window[1:]
        yield torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
