"""A tiny name -> object registry. Built-ins register exactly as a plugin would."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Generic, Iterator, TypeVar

from stepdistill.errors import StepdistillError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects. ``kind`` is used in error messages ("unknown task 'x'; known: ...").

    ``group`` names an entry-point group: third-party packages may register objects there; they are
    loaded lazily on the first lookup.
    """

    def __init__(self, kind: str, group: str | None = None):
        self.kind = kind
        self.group = group
        self._items: dict[str, T] = {}
        self._plugins_loaded = group is None

    def register(self, name: str, obj: T | None = None, *, replace: bool = False):
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""

        def add(o: T) -> T:
            if name in self._items and not replace:
                raise StepdistillError(f"{self.kind} '{name}' is already registered")
            self._items[name] = o
            return o

        if obj is None:
            return add
        return add(obj)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.group):
            if ep.name not in self._items:
                self._items[ep.name] = ep.load()

    def get(self, name: str) -> T:
        self._load_plugins()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise StepdistillError(f"unknown {self.kind} '{name}'; known: {known}") from None

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._items

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        self._load_plugins()
        return iter(sorted(self._items.items()))
