"""The running statistics of batch norms while a run trains (``train.batch_norm_momentum``) and
before each validation (``train.precise_batch_norm``).

A batch norm normalises by its batch's statistics while training and by running averages of them at
evaluation. PyTorch's default average, ``running = 0.9 * running + 0.1 * batch``, remembers the last
~10 steps; at a high sgd rate the weights, and with them every layer's activations, move further
than that in a few steps, so the averages describe a network that no longer exists and the evaluated
model is not the trained one. Measured on CIFAR-10 (a 64/256/256 conv net from scratch, sgd at lr
1.3, batch 1024, epoch 6): validation error 0.768 with the running averages, 0.348 with the same
weights once the averages were recomputed on 10,000 random training images, while its training error
was 0.267. Fast averages follow the weights (Keller Jordan's airbench CIFAR-10 recipe uses 0.4 in
PyTorch's sense: the last ~2.5 steps); they do not cure the peak-rate epochs, where the weights move
within those steps too (the run above with 0.4: validation error 0.59 and 0.83 after epochs 5 and 6,
0.13 at its end; after epoch 3, 0.442 with its averages and 0.304 with averages recomputed at the
same weights). The momentum is a training setting, not part of the weights: it holds for the run and
each layer gets its own back afterwards, so a model trained in this process and its saved copy read
back behave alike in later runs.

The complete fix is to recompute the averages at the weights being evaluated: precise batch norm
(Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021), over a few training batches after each
epoch, so that validation, the weights kept and the checkpoint all carry the statistics of the
network they belong to. torch's ``swa_utils.update_bn`` does that for every batch norm, frozen ones
included; :func:`recompute_batch_norm` leaves the frozen ones alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@contextmanager
def batch_norm_momentum(model: nn.Module, momentum: float | None) -> Iterator[None]:
    """Every batch norm of ``model`` (any dimension, synchronised or not) averages its running
    statistics with ``momentum`` inside the block (PyTorch's sense: the weight of the new batch);
    None leaves each layer's own."""
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm)] if momentum is not None else []
    with momentum_of(layers, momentum):
        yield


@contextmanager
def momentum_of(layers: list[_BatchNorm], momentum: float | None) -> Iterator[None]:
    """``layers`` average with ``momentum`` inside the block (None: a cumulative average); each
    gets its own back afterwards, whatever happens."""
    before = [m.momentum for m in layers]
    for m in layers:
        m.momentum = momentum
    try:
        yield
    finally:
        for m, value in zip(layers, before, strict=True):
            m.momentum = value


@torch.no_grad()
def recompute_batch_norm(model: nn.Module, batches: Iterable[Any], call: Callable[[Any], Any]
                         ) -> list[_BatchNorm]:
    """The batch norms of ``model`` that train (in training mode once ``model.train()`` ran, and
    tracking statistics) get, as running statistics, the plain mean of the batch statistics over
    ``batches`` at the current weights; ``call(batch)`` is the training step's forward. Returns
    those layers. Frozen ones (kept in eval mode by the model, e.g. a pretrained encoder's while
    the head warms up) keep theirs: torch's ``update_bn`` would reset them to 0 and 1, which they
    never relearn. Each layer's momentum and the model's mode are restored, whatever happens."""
    was_training = model.training
    model.train()
    layers = [m for m in model.modules()
              if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    try:
        with momentum_of(layers, None):  # a cumulative average: every batch weighs the same
            for m in layers:
                m.reset_running_stats()
            for batch in batches if layers else ():
                call(batch)
    finally:
        model.train(was_training)
    return layers
