"""An exponential moving average (EMA) of the weights, which training evaluates and saves in their place.

Late in a run every optimizer step still moves the weights by about the learning rate, so the loss
wanders from step to step; the average of the last ~1 / (1 - decay) steps sits nearer the valley floor.
The model's own weights keep training; the average is only swapped in to be evaluated or saved.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.params = list(model.parameters())  # tied weights appear once
        self.average = [p.detach().clone() for p in self.params]
        self.decay = decay
        self.steps = 0

    @torch.no_grad()
    def update(self) -> None:
        """Fold in the weights after an optimizer step."""
        self.steps += 1
        # Until 1 / (1 - decay) steps have passed this is the plain mean of every step so far, so the
        # random initial weights do not linger in a short run.
        weight = max(1.0 - self.decay, 1.0 / (self.steps + 1))
        for average, p in zip(self.average, self.params):
            average.lerp_(p.detach(), weight)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Inside the block the model holds the averaged weights; its own come back afterwards."""
        with torch.no_grad():
            own = [p.detach().clone() for p in self.params]
            for p, average in zip(self.params, self.average):
                p.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, mine in zip(self.params, own):
                    p.copy_(mine)

    def state_dict(self) -> dict[str, Any]:
        """What resuming needs beside a checkpoint whose `model` holds the average: the trained weights."""
        return {"steps": self.steps, "weights": [p.detach().clone() for p in self.params]}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Call with the model holding a checkpoint's weights: they become the average. With `state` (saved
        by state_dict) the trained weights go back into the model; without it (a checkpoint written with no
        average) the model keeps them and the average starts over from them."""
        self.average = [p.detach().clone() for p in self.params]
        self.steps = 0
        if state is not None:
            restore_trained_weights(self.params, state)
            self.steps = int(state["steps"])


@torch.no_grad()
def restore_trained_weights(params: list[torch.nn.Parameter], state: dict[str, Any]) -> None:
    weights = state["weights"]
    if len(weights) != len(params) or any(w.shape != p.shape for w, p in zip(weights, params)):
        raise ValueError("the checkpoint's weight_average does not match this model's parameters")
    for p, w in zip(params, weights):
        p.copy_(w)
