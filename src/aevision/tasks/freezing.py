"""Holding pretrained parts still for the first epochs of training: one mechanism for every task.

A new head on a pretrained network sends random gradients into it at first; freezing the
pretrained parts for a few epochs lets the head learn on fixed features before fine-tuning moves
them (linear-probe-then-fine-tune, Kumar et al. 2022). A :class:`Freezable` model names those parts
(:meth:`~Freezable.frozen_parts`); the :class:`~aevision.engine.Trainer` calls
:meth:`~Freezable.on_train_epoch_start` before every epoch, resumed ones too, which freezes them
during the first ``freeze_epochs`` epochs and releases them after. A frozen part gets no gradient
and stays in eval mode, so its batch-norm statistics do not drift either. Its parameters stay in
the optimizer (``param_groups``): with no gradient Adam leaves them, and their state, alone until
they are released.
"""

from __future__ import annotations

from typing import Self

from torch import nn


class Freezable(nn.Module):
    """An ``nn.Module`` whose :meth:`frozen_parts` are held still for the first ``freeze_epochs``."""

    def __init__(self) -> None:
        super().__init__()
        self.freeze_epochs = 0
        self.frozen = False

    def frozen_parts(self) -> list[nn.Module]:
        """The modules that ``freeze_epochs`` holds still."""
        raise NotImplementedError

    def freeze_for(self, epochs: int) -> None:
        """Freeze for the first ``epochs`` epochs of the next run, starting now (as its first
        :meth:`on_train_epoch_start` would), so that the Trainer wraps an already frozen model."""
        self.freeze_epochs = epochs
        self.set_frozen(epochs > 0)

    def on_train_epoch_start(self, epoch: int) -> None:
        """The Trainer's hook, called before every epoch (0-based)."""
        self.set_frozen(epoch < self.freeze_epochs)

    def set_frozen(self, frozen: bool) -> None:
        self.frozen = frozen
        for part in self.frozen_parts():
            for p in part.parameters():
                p.requires_grad_(not frozen)
            if frozen:
                part.eval()
            elif self.training:
                part.train()

    def train(self, mode: bool = True) -> Self:
        super().train(mode)
        if self.frozen:  # frozen parts keep their batch-norm statistics
            for part in self.frozen_parts():
                part.eval()
        return self
