"""Sequences of record origins (line numbers, byte offsets) computed on demand: an origin is
looked up only for the rare record a step or the sink rejects.
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import Sequence
from typing import Any

__all__ = [
    "LineOffsets",
    "OnDemand",
    "StartLines",
]


class OnDemand(Sequence[int]):
    """A sequence of numbers computed one at a time when asked (origins are looked up only for
    the rare record a step or the sink rejects); subclasses give ``__len__``, ``_at`` and
    ``to_list``."""

    __slots__ = ()

    @abc.abstractmethod
    def _at(self, i: int) -> int:
        """Number ``i`` alone (for the one record a dead letter is about)."""

    @abc.abstractmethod
    def to_list(self) -> list[int]:
        """Every number, in one pass (origins sent to another process): asking :meth:`_at`
        for each would cost O(n²)."""

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return self.to_list()[i]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._at(i)


class LineOffsets(OnDemand):
    """The byte offset of each of ``lines`` (read one after the other from ``base``)."""

    __slots__ = ("_base", "_lines")

    def __init__(self, base: int, lines: list[bytes]) -> None:
        self._base = base
        self._lines = lines

    def __len__(self) -> int:
        return len(self._lines)

    def _at(self, i: int) -> int:
        return self._base + sum(map(len, self._lines[:i]))

    def to_list(self) -> list[int]:
        if not self._lines:
            return []
        return list(itertools.accumulate(map(len, self._lines[:-1]), initial=self._base))


class StartLines(OnDemand):
    """The first line of each row of a pass, from the line counts after each."""

    __slots__ = ("_ends", "_first")

    def __init__(self, first: int, ends: list[int]) -> None:
        self._first = first
        self._ends = ends

    def __len__(self) -> int:
        return len(self._ends)

    def _at(self, i: int) -> int:
        return self._first + (self._ends[i - 1] if i else 0)

    def to_list(self) -> list[int]:
        first = self._first
        return [first, *(first + e for e in self._ends[:-1])] if self._ends else []
