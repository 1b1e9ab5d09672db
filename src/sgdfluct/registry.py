"""Named registries: the extension points of sgdfluct (input kinds, theory methods, engines).

A registry maps a name to an implementation. Adding an input kind, a theory method or an engine
is one module plus one registration line::

    from sgdfluct.data import INPUT_KINDS

    @INPUT_KINDS.register("my_kind")
    def my_kind(config, n, rng): ...

Looking up an unknown name raises :class:`~sgdfluct.errors.ConfigError` naming the key and the
registered choices (``docs/architecture.md`` lists every registry).

>>> from sgdfluct.registry import Registry
>>> r = Registry("demo.kind")
>>> @r.register("a")
... def a():
...     return 1
>>> r.names(), r.get("a")()
(('a',), 1)
>>> r.get("b")
Traceback (most recent call last):
...
sgdfluct.errors.ConfigError: demo.kind = 'b' is not allowed: expected one of 'a'
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from sgdfluct.errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered name -> implementation map with a key name for error messages.

    Parameters
    ----------
    key : str
        The config key (or argument) the names are chosen with, e.g. ``"data.inputs"``.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T | None = None) -> Callable[[T], T]:
        """Register ``item`` under ``name`` (or use as a decorator when ``item`` is None).

        Re-registering a name replaces the earlier entry (tests and plug-ins may override).
        """

        def add(obj: T) -> T:
            if not isinstance(name, str) or not name:
                raise ValueError(f"{self.key}: a registered name must be a non-empty string")
            self._items[name] = obj
            return obj

        if item is not None:
            add(item)
        return add

    def unregister(self, name: str) -> None:
        """Remove ``name`` (no error if absent)."""
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        """The implementation registered as ``name``; :class:`ConfigError` if there is none."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise ConfigError(
                f"{self.key} = {name!r} is not allowed: expected one of "
                + ", ".join(repr(n) for n in self._items)
            ) from None

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.key!r}, {list(self._items)})"
