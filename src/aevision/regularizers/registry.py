"""The regularizer registry and the builder used by configs."""

from __future__ import annotations

from typing import Any

from aevision.errors import ConfigError
from aevision.registry import Registry

REGULARIZERS: Registry[Any] = Registry("regularizer")


def build_regularizer(spec: dict[str, Any], field: str) -> Any:
    """``{"name": "l1", "weight": 1e-4, **options}`` -> a :class:`Regularizer`.

    ``weight`` is one of the options (of the regularizers with a penalty); ``weight: null``, which
    saved configs hold when none was given, means the regularizer's default weight.
    """
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(field, spec, "a mapping with a 'name' (e.g. {name: l1, weight: 1e-4})")
    options = {k: v for k, v in spec.items() if k != "name" and not (k == "weight" and v is None)}
    try:
        reg = REGULARIZERS.build(spec["name"], field=field, options=options)
    except ConfigError as e:
        if e.field.startswith(field):
            raise
        raise ConfigError(f"{field}.{e.field}", e.value, e.expected) from None
    return reg
