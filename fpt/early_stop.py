"""Early stopping on validation accuracy, as a training option (RunSpec.patience).

After every evaluation the loop reports the val accuracy. A strictly higher accuracy than
the best so far is a new best (so among equal accuracies the earliest evaluation wins): its
trainable weights are copied. After `patience` evaluations in a row without a new best the
run stops, and the best weights are put back so the final checkpoint is the best-val model.
The whole state (best weights included) goes into the checkpoint, so a resumed run makes
exactly the decisions an uninterrupted one makes.
"""

from __future__ import annotations

import math
from typing import Any

import torch


class EarlyStopping:
    def __init__(self, patience: int) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1 evaluation, not {patience}")
        self.patience = patience
        self.best_accuracy = -math.inf
        self.best_step: int | None = None
        self.bad_evals = 0
        self.stopped = False
        self.best_state: dict[str, torch.Tensor] | None = None

    def update(self, step: int, val_accuracy: float, model: torch.nn.Module) -> bool:
        """Record one evaluation; True when the run should stop now. `model`'s trainable
        tensors at `step` are copied only when they are a new best, and on their own device:
        a copy to the host at every evaluation would stall a GPU for nothing."""
        if math.isfinite(val_accuracy) and val_accuracy > self.best_accuracy:
            self.best_accuracy, self.best_step, self.bad_evals = val_accuracy, step, 0
            self.best_state = {
                n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad
            }
        else:
            self.bad_evals += 1
        self.stopped = self.bad_evals >= self.patience
        return self.stopped

    def restore(self, model: torch.nn.Module) -> None:
        """Load the best weights back into `model` (only trainable tensors were kept)."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state, strict=False)

    def state_dict(self) -> dict[str, Any]:
        return {
            "patience": self.patience,
            "best_accuracy": self.best_accuracy,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "stopped": self.stopped,
            "best_state": self.best_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.patience = state["patience"]
        self.best_accuracy = state["best_accuracy"]
        self.best_step = state["best_step"]
        self.bad_evals = state["bad_evals"]
        self.stopped = state["stopped"]
        self.best_state = state["best_state"]
