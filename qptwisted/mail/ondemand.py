"""Attributes whose empty container is made on first use, so idle connections stay small."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class OnDemand(Generic[T]):
    """A ``notes``-style attribute: ``factory()`` is called on the first read, not in ``__init__``.

    Most connections never write a note; an empty dict per connection and
    per transaction is memory a thousand idle sessions hold for nothing. The
    value lives in the slot named ``_<name>`` (which the class must declare),
    ``None`` until first used; assigning replaces it as for a plain attribute.
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        self.factory = factory
        self.slot = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = "_" + name

    @overload
    def __get__(self, instance: None, owner: type) -> OnDemand[T]: ...

    @overload
    def __get__(self, instance: object, owner: type) -> T: ...

    def __get__(self, instance: object | None, owner: type) -> OnDemand[T] | T:
        if instance is None:
            return self
        value: T | None = getattr(instance, self.slot)
        if value is None:
            value = self.factory()
            setattr(instance, self.slot, value)
        return value

    def peek(self, instance: object) -> T | None:
        """The value if it was made, else ``None`` (a read that makes nothing)."""
        value: T | None = getattr(instance, self.slot)
        return value

    def __set__(self, instance: Any, value: T) -> None:
        setattr(instance, self.slot, value)
