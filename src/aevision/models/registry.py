"""The model registry and the one function that builds an autoencoder from config."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aevision.registry import Registry

MODELS: Registry[Callable[..., Any]] = Registry("model")


def build_model(
    name: str,
    input_shape: Sequence[int],
    options: dict[str, Any] | None = None,
    regularizers: Sequence[dict[str, Any]] = (),
    reconstruction: str = "mse",
) -> Any:
    """Architecture ``name`` with ``options`` + regularizer configs -> :class:`Autoencoder`.

    ``regularizers`` are mappings ``{"name", "weight", **options}`` as in a config file.
    """
    from aevision.models.base import Autoencoder
    from aevision.regularizers import build_regularizer
    from aevision.validation import check

    check(reconstruction in ("mse", "bce", "l1"), "model.reconstruction", reconstruction,
          "one of 'mse', 'bce', 'l1'")
    options = dict(options or {})
    shape = tuple(int(s) for s in input_shape)
    parts = MODELS.build(name, shape, field="model", options=options)
    code_shape = parts.notes.get("code_shape")  # what regularizers sized to the code are built for
    regs = [build_regularizer(r, f"regularizers[{i}]", code_shape) for i, r in enumerate(regularizers)]
    spec = {
        "name": name,
        "reconstruction": reconstruction,
        "options": options,
        "regularizers": [dict(r) for r in regularizers],
        "input_shape": list(shape),
    }
    cls = parts.autoencoder or Autoencoder
    model = cls(parts, shape, regs, reconstruction, spec)  # type: ignore[arg-type]
    for i, reg in enumerate(regs):  # the configured ones; the architecture's own need no check
        reg.check(model, f"regularizers[{i}]")
    return model
