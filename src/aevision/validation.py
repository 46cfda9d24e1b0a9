"""Type checks for config values, with messages that name the field, the value and what is allowed.

Configs come from YAML files and ``key=value`` overrides, so values arrive as plain Python objects
(int, float, str, list, dict). :func:`coerce` checks one against a type annotation and converts the
harmless cases (an int where a float is wanted, a list where a tuple is wanted).
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from aevision.errors import ConfigError


def describe(annotation: Any) -> str:
    """Human wording of a type annotation, for error messages."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is Any:
        return "any value"
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin in (list, tuple):
        inner = args[0] if args else Any
        return f"a list of {describe_items(inner)}" if inner is not Any else "a list"
    if origin is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def describe_items(annotation: Any) -> str:
    """:func:`describe` for the items of a list: "integers", not "an integers"."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(describe_items(a) for a in args)
    if origin in (list, tuple):
        return f"lists of {describe_items(args[0])}" if args else "lists"
    if origin is Literal:
        return "values among " + ", ".join(repr(a) for a in args)
    many = {bool: "true or false values", int: "integers", float: "numbers", str: "strings",
            type(None): "nulls", Any: "values"}
    return many.get(annotation, "mappings" if origin is dict else f"{describe(annotation)} values")


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """A count in words: ``1 image``, ``2 images`` (``nouns``: an irregular plural)."""
    return f"{n} {noun if n == 1 else nouns or noun + 's'}"


def coerce(field: str, value: Any, annotation: Any) -> Any:
    """Return ``value`` converted to ``annotation`` or raise :class:`ConfigError` naming ``field``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is Any:
        return value
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(field, value, "null")
    if origin is Literal:
        if value in args and not (isinstance(value, bool) and not any(a is value for a in args)):
            return value
        raise ConfigError(field, value, describe(annotation))
    if origin in (Union, types.UnionType):
        for arg in args:
            try:
                return coerce(field, value, arg)
            except ConfigError:
                continue
        raise ConfigError(field, value, describe(annotation))
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(field, value, describe(annotation))
        inner = args[0] if args else Any
        items = [coerce(f"{field}[{i}]", v, inner) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(field, value, "a mapping")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(field, value, "true or false")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(field, value, "an integer")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(field, value, "a number")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(field, value, "a string")
    raise TypeError(f"unsupported annotation {annotation!r} for {field}")


def coerce_kwargs(field: str, fn: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Check ``kwargs`` against the keyword-only parameters of ``fn`` (names and types)."""
    import inspect

    target = fn.__init__ if inspect.isclass(fn) else fn
    hints = typing.get_type_hints(target)
    params = {
        n: p
        for n, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    out = {}
    for key, value in kwargs.items():
        if key not in params:
            raise ConfigError(f"{field}.{key}", value, known_option(key, params))
        out[key] = coerce(f"{field}.{key}", value, hints.get(key, Any))
    return out


def known_option(key: str, options: Any) -> str:
    """What an unknown option's error expects: the options there are, and the one a typo most
    likely meant (``wieght`` -> ``weight``)."""
    import difflib

    names = sorted(options)
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return "a known option: " + (", ".join(names) or "none") + hint


def check(condition: bool, field: str, value: Any, expected: str) -> None:
    if not condition:
        raise ConfigError(field, value, expected)
