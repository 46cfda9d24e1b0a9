"""The regularizer registry and the builder used by configs."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from aevision.errors import ConfigError
from aevision.registry import Registry

REGULARIZERS: Registry[Any] = Registry("regularizer")

STAND_IN_CODE_SHAPE = (1, 1, 1)  # for regularizers sized to the code, built without a model's


def takes_code_shape(cls: Any) -> bool:
    """Whether a regularizer is sized to the model's spatial code: its constructor's positional
    ``code_shape`` (a fact of the model, not a keyword-only option: configs never set it)."""
    param = inspect.signature(cls).parameters.get("code_shape")
    return param is not None and param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD


def build_regularizer(spec: dict[str, Any], field: str, code_shape: Sequence[int] | None = None) -> Any:
    """``{"name": "l1", "weight": 1e-4, **options}`` -> a :class:`Regularizer`.

    ``weight`` is one of the options (of the regularizers with a penalty); ``weight: null``, which
    saved configs hold when none was given, means the regularizer's default weight.
    ``code_shape``: the model's spatial code (M, h, w) (``Parts.notes["code_shape"]``), which
    ``build_model`` passes on to the regularizers sized to it (entropy models). Without one (a
    config's options checked before there is a model, or a model with a flat code, which their
    ``check`` then refuses) they are built for a single latent.
    """
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(field, spec, "a mapping with a 'name' (e.g. {name: l1, weight: 1e-4})")
    options = {k: v for k, v in spec.items() if k != "name" and not (k == "weight" and v is None)}
    entry = REGULARIZERS.get(spec["name"], f"{field}.name")
    given = (tuple(code_shape or STAND_IN_CODE_SHAPE),) if takes_code_shape(entry.fn) else ()
    try:
        reg = REGULARIZERS.build(spec["name"], *given, field=field, options=options)
    except ConfigError as e:
        if e.field.startswith(field):
            raise
        raise ConfigError(f"{field}.{e.field}", e.value, e.expected) from None
    return reg
