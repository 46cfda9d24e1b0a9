"""Name -> builder registries: one way to build every model, regularizer and dataset.

A registry maps a short name (``conv``, ``l1``, ``mnist``) to a callable. The CLI lists them
(``aevision models``) and configs name them; keyword arguments are checked against the callable's
signature so a typo in a config is an error, not a silently ignored key.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aevision.errors import ConfigError
from aevision.validation import coerce_kwargs

T = TypeVar("T", bound=Callable[..., Any])


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    fn: T
    summary: str
    # what a config may be checked against before anything is built (a model's
    # "numbered_layers": its encoder numbers its layers, so fine-tuning may decay lr by layer)
    traits: frozenset[str] = frozenset()

    def parameters(self) -> dict[str, inspect.Parameter]:
        """Keyword parameters a config may set (those after the positional, data-given ones)."""
        sig = inspect.signature(self.fn)
        return {
            n: p
            for n, p in sig.parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }


class Registry(Generic[T]):
    """A named collection of builders; ``kind`` appears in error messages ("model", "dataset")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, summary: str | None = None, *,
                 traits: Iterable[str] = ()) -> Callable[[T], T]:
        def deco(fn: T) -> T:
            if name in self._entries:
                raise RuntimeError(f"{self.kind} {name!r} is registered twice")
            doc = summary or (inspect.getdoc(fn) or "").split("\n")[0]
            self._entries[name] = Entry(name, fn, doc, frozenset(traits))
            return fn

        return deco

    def get(self, name: str, field: str | None = None) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                field or self.kind, name, f"one of {', '.join(sorted(self._entries))}"
            ) from None

    def build(self, name: str, *args: Any, field: str, options: dict[str, Any]) -> Any:
        """Call the builder of ``name`` with ``options`` checked against its keyword parameters."""
        entry = self.get(name, f"{field}.name")
        return entry.fn(*args, **coerce_kwargs(field, entry.fn, options))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        return sorted(self._entries)
