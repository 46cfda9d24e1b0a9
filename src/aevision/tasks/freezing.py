"""Holding pretrained parts still for the first epochs of training: one mechanism for every task.

A new head on a pretrained network sends random gradients into it at first; freezing the
pretrained parts for a few epochs lets the head learn on fixed features before fine-tuning moves
them (linear-probe-then-fine-tune, Kumar et al. 2022). A :class:`Freezable` model names those parts
(:meth:`~Freezable.frozen_parts`); the :class:`~aevision.engine.Trainer` calls
:meth:`~Freezable.on_train_epoch_start` before every epoch, resumed ones too, which freezes them
during the first ``freeze_epochs`` epochs and releases them after. A frozen part gets no gradient
and stays in eval mode, so its batch-norm statistics do not drift either. Its parameters stay in
the optimizer (``param_groups``): with no gradient Adam leaves them, and their state, alone until
they are released. With ``freeze_norm`` the released parts' batch norms stay in eval mode too: their
statistics, gathered over the whole pretraining set, would otherwise be replaced by those of small
batches of a few labelled images (the frozen-BN practice of detection and segmentation fine-tuning);
their scales and shifts still train.
"""

from __future__ import annotations

from typing import Self

from torch import nn

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class Freezable(nn.Module):
    """An ``nn.Module`` whose :meth:`frozen_parts` are held still for the first ``freeze_epochs``."""

    def __init__(self) -> None:
        super().__init__()
        self.freeze_epochs = 0
        self.frozen = False
        self.freeze_norm = False  # the frozen parts' batch-norm statistics stay fixed after release

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
        self._hold_norm_statistics()

    def train(self, mode: bool = True) -> Self:
        super().train(mode)
        if self.frozen:  # frozen parts keep their batch-norm statistics
            for part in self.frozen_parts():
                part.eval()
        self._hold_norm_statistics()
        return self

    def _hold_norm_statistics(self) -> None:
        """With ``freeze_norm``: the frozen parts' batch norms in eval mode, released or not."""
        if self.freeze_norm:
            for part in self.frozen_parts():
                for module in part.modules():
                    if isinstance(module, BATCH_NORMS):
                        module.eval()
