"""The rows of thousands of node names at once.

kube-scheduler names every candidate node of every pod (5,000 names on a
5,000-node cluster), in a new order each time.  A dict lookup per name hashes a
freshly parsed string and probes memory the last request left cold: in a real
kube-scheduler run at 2,500 nodes, over a third of fairpack's filter time.
:class:`NameIndex` looks them all up in a few numpy passes over
:class:`EncodedNames`, the names as one buffer of bytes (joined from strings, or
read straight from a request body without making a string per name): each name is
read as 64-bit words, hashed, and found in one of its two slots of a cuckoo table
built once per node list; every hit is compared word for word, so a row comes back
only for the very name.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]

_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_SECOND_MULTIPLIER = np.uint64(0xC2B2AE3D27D4EB4F)
"""Picks a name's second slot from the same hash (any other odd constant would do)."""
_SHIFT = np.uint64(29)
_LINE_BREAK = "\n"
_LONGEST_INDEXED = 64
"""Bytes of the longest name an index is built for: cloud node names take 20-45
(``ip-10-0-1-23.ec2.internal``, ``aks-nodepool1-12345678-vmss000000``); a 253-byte one
would make every lookup read 32 words per name, slower than a dict."""
_SPARE = _LONGEST_INDEXED
"""Zero bytes after the last name: every word of a name an index may read (no more than
``_LONGEST_INDEXED`` bytes from its start) lies in the buffer."""
_SINGLE_READS = 16
"""Names an EncodedNames decodes one at a time (the node filter passes, a few it
explains; counted over its life, as a list the memo keeps serves again) before it
decodes them all at once: about 0.75 us a name one at a time, under 0.1 all at once."""
_MAX_KICKS = 500
"""Moves of one insertion into the cuckoo table before giving up on the index; at a
quarter full, a handful at most."""
_TABLE_TRIES = 3
"""Sizes of cuckoo table tried, each twice the last, before giving up on an index."""
_LOW_BYTES = np.array([(1 << (8 * n)) - 1 for n in range(8)] + [(1 << 64) - 1], dtype=np.uint64)
"""Per count of bytes 0..8, the mask keeping that many low (little-endian: first) bytes."""


class EncodedNames(Sequence[str]):
    """Names as UTF-8 bytes: ``text``, the names with ``separator`` between them (which
    no name holds), and each name's start and length in it.  What :class:`NameIndex`
    reads, and a sequence of the names, decoded when read."""

    __slots__ = ("_decoded", "_reads", "buffer", "lengths", "separator", "starts", "text")

    def __init__(
        self,
        text: bytes,
        separator: bytes,
        starts: IntArray,
        lengths: IntArray,
        decoded: list[str] | None = None,
    ) -> None:
        self.text, self.separator = text, separator
        self.starts, self.lengths = starts, lengths
        self.buffer = np.zeros(len(text) + _SPARE, dtype=np.uint8)
        """``text`` and ``_SPARE`` zero bytes."""
        self.buffer[: len(text)] = np.frombuffer(text, dtype=np.uint8)
        self._decoded = decoded
        self._reads = 0

    @classmethod
    def join(cls, names: Sequence[str]) -> EncodedNames | None:
        """``names`` encoded; None when one is not a string or holds a line break."""
        if isinstance(names, EncodedNames):
            return names
        if not names:
            empty = np.zeros(0, dtype=np.int64)
            return cls(b"", _LINE_BREAK.encode(), empty, empty, [])
        try:
            text = _encode(_LINE_BREAK.join(names))
        except TypeError:  # not all strings
            return None
        breaks = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == ord(_LINE_BREAK))
        if len(breaks) != len(names) - 1:
            return None
        starts = np.empty(len(names), dtype=np.int64)
        starts[0] = 0
        starts[1:] = breaks + 1
        lengths = np.empty(len(names), dtype=np.int64)
        lengths[:-1] = breaks
        lengths[-1] = len(text)
        lengths -= starts
        return cls(text, _LINE_BREAK.encode(), starts, lengths, list(names))

    def decoded(self) -> list[str]:
        """The names as strings (made once)."""
        if self._decoded is None:
            self._decoded = (
                self.text.decode(errors="surrogatepass").split(self.separator.decode())
                if len(self.starts)
                else []
            )
        return self._decoded

    def __len__(self) -> int:
        return len(self.starts)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return self.decoded()[index]
        index = operator.index(index)  # a TypeError for anything but an integer, as a list's
        self._reads += 1
        if self._decoded is not None or self._reads > _SINGLE_READS:
            return self.decoded()[index]
        start = int(self.starts[index])  # an IndexError out of range, as a list's
        end = start + int(self.lengths[index])
        return self.text[start:end].decode(errors="surrogatepass")

    def __iter__(self) -> Iterator[str]:
        return iter(self.decoded())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EncodedNames) and other.separator == self.separator:
            return other.text == self.text and len(other) == len(self)
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(other) == len(self) and self.decoded() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # a sequence, compared by its names

    def __repr__(self) -> str:
        return f"EncodedNames({self.decoded()!r})"


def names_at(names: Sequence[str], indexes: list[int]) -> list[str]:
    """``names[i]`` for each of ``indexes``: encoded names decoded one at a time for a
    few, all at once for more."""
    if isinstance(names, EncodedNames) and len(indexes) > _SINGLE_READS:
        names = names.decoded()
    return [names[i] for i in indexes]


def _hash(lengths: IntArray, words: list[np.ndarray]) -> np.ndarray:
    """A 64-bit hash per name of its length and words (one uint64 array per 8 bytes): a
    multiplicative hash every byte reaches.  (Names that differ by NUL bytes at their
    end have the same words.)"""
    hashed = lengths.astype(np.uint64)
    hashed += _SECOND_MULTIPLIER  # no fixed point at zero
    for word in words:
        hashed ^= word
        hashed *= _MULTIPLIER
        hashed ^= hashed >> _SHIFT
    hashed *= _MULTIPLIER
    return hashed


def _words(names: EncodedNames, masks: np.ndarray) -> list[np.ndarray]:
    """Each name's 64-bit words (zero past its end); ``masks[word][length]`` keeps a
    name of that length's bytes in that word."""
    buffer, starts, lengths = names.buffer, names.starts, names.lengths
    # Every 8 bytes from every offset, as one (unaligned) uint64 per offset.
    windows = np.ndarray((len(buffer) - 7,), dtype=np.uint64, buffer=buffer.data, strides=(1,))
    return [windows[starts + 8 * index] & masks[index][lengths] for index in range(len(masks))]


class NameIndex:
    """The row of each of the names it was built on (distinct), for lists of them at a
    time."""

    @classmethod
    def of(cls, names: Sequence[str]) -> NameIndex | None:
        """The index of ``names``; None where a lookup name by name does better: no
        names, a name twice (the dict keeps the last row), a line break in one, a name
        longer than ``_LONGEST_INDEXED`` bytes (every lookup reads as many words as the
        longest name has), a big-endian machine, whose words the masks do not fit, or
        (never seen) names the cuckoo table cannot hold."""
        if not names or sys.byteorder != "little" or len(set(names)) != len(names):
            return None
        encoded = EncodedNames.join(names)
        if encoded is None or encoded.lengths.max() > _LONGEST_INDEXED:
            return None
        index = cls(encoded)
        return index if index._table is not None else None

    def __init__(self, names: EncodedNames) -> None:
        count = len(names)
        self._longest = int(names.lengths.max())
        """Bytes of the longest name (a longer one is no node's)."""
        if self._longest > _LONGEST_INDEXED:  # its words would lie past the spare bytes
            raise ValueError(f"a name of {self._longest} bytes (at most {_LONGEST_INDEXED})")
        words = max(1, -(-self._longest // 8))
        length = np.arange(self._longest + 1)
        self._masks = np.stack(
            [_LOW_BYTES[np.clip(length - 8 * index, 0, 8)] for index in range(words)]
        )
        """Per word and name length, the mask of the name's bytes in that word."""
        # Row ``count`` is no name's: an empty slot, whose length no name has.
        self._known = [np.append(word, np.uint64(0)) for word in _words(names, self._masks)]
        self._lengths = np.append(names.lengths, -1)
        self._hashes = _hash(self._lengths, self._known)
        self._table: IntArray | None = None
        smallest = max(4, (4 * count - 1).bit_length())  # at most a quarter full
        for bits in range(smallest, smallest + _TABLE_TRIES):
            self._shift = np.uint64(64 - bits)
            self._table = _cuckoo(*self._slots(self._hashes[:count]), bits)
            if self._table is not None:
                break

    def _slots(self, hashed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each hash's two slots."""
        return hashed >> self._shift, (hashed * _SECOND_MULTIPLIER) >> self._shift

    def rows_of(self, names: EncodedNames) -> IntArray | None:
        """Rows of ``names``, in their order; None when a name is not one of the index's:
        look those up one by one."""
        if self._table is None or not len(names) or names.lengths.max() > self._longest:
            return None if len(names) else np.zeros(0, dtype=np.int64)
        words = _words(names, self._masks)
        hashed = _hash(names.lengths, words)
        first, second = (self._table[slots] for slots in self._slots(hashed))
        rows: IntArray = np.where(self._hashes[first] == hashed, first, second)
        # The length too: a name with a NUL byte at its end has the same words.
        same = self._lengths[rows] == names.lengths
        for known, asked in zip(self._known, words, strict=True):
            same &= known[rows] == asked
        return rows if same.all() else None


def _cuckoo(first: np.ndarray, second: np.ndarray, bits: int) -> IntArray | None:
    """A table of ``1 << bits`` slots holding each row ``i`` at ``first[i]`` or
    ``second[i]``; empty slots hold the row count.  None if some row finds no place."""
    count = len(first)
    table = [count] * (1 << bits)
    firsts, seconds = first.tolist(), second.tolist()
    for row in range(count):
        slot, moving = firsts[row], row
        for _ in range(_MAX_KICKS):
            table[slot], moving = moving, table[slot]
            if moving == count:  # it took an empty slot
                break
            slot = seconds[moving] if slot == firsts[moving] else firsts[moving]
        else:
            return None
    return np.array(table, dtype=np.int64)


def _encode(name: str) -> bytes:
    # One to one, lone surrogates too (JSON can carry them; UTF-8 proper cannot).
    return name.encode(errors="surrogatepass")
