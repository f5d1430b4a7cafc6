"""A ``str`` subclass some callers have (an ORM's case-insensitive text), for the tests
that a subject or context is used by its text, never by a subclass's own comparison."""

from __future__ import annotations


class Folded(str):
    """Equal, and hashed alike, whatever its case."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and self.casefold() == other.casefold()

    def __hash__(self) -> int:
        return hash(self.casefold())
