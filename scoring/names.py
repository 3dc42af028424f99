"""The rows of thousands of node names at once.

kube-scheduler names every candidate node of every pod (5,000 names on a
5,000-node cluster), in a new order each time.  A dict lookup per name hashes a
freshly parsed string and probes memory the last request left cold: in a real
kube-scheduler run at 2,500 nodes, over a third of fairpack's filter time.
:class:`NameIndex` looks them all up in a few numpy passes: the names are joined
into one buffer, read as 64-bit words, hashed, and found in an open-addressing
table built once per node list; every hit is compared word for word, so a row
comes back only for the very name.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]

_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(29)
_SEPARATOR = ord("\n")
_MAX_PROBES = 32
"""Probes before giving up (the caller then looks the names up one by one); the table
is at most a quarter full."""
_LONGEST_INDEXED = 64
"""Bytes of the longest name an index is built for: cloud node names take 20-45
(``ip-10-0-1-23.ec2.internal``, ``aks-nodepool1-12345678-vmss000000``); a 253-byte one
would make every lookup read 32 words per name, slower than a dict."""
_LOW_BYTES = np.array([(1 << (8 * n)) - 1 for n in range(8)] + [(1 << 64) - 1], dtype=np.uint64)
"""Per count of bytes 0..8, the mask keeping that many low (little-endian: first) bytes."""


def _hash(words: list[np.ndarray], bits: np.uint64) -> np.ndarray:
    """A ``bits``-bit hash per name of its words (one uint64 array per 8 bytes): the
    top bits of a multiplicative hash, which every byte reaches."""
    hashed = np.zeros(len(words[0]), dtype=np.uint64)
    for word in words:
        hashed ^= word
        hashed *= _MULTIPLIER
        hashed ^= hashed >> _SHIFT
    hashed *= _MULTIPLIER
    return hashed >> (np.uint64(64) - bits)


def _words(
    buffer: np.ndarray, starts: IntArray, lengths: IntArray, masks: np.ndarray
) -> list[np.ndarray]:
    """Each name's 64-bit words (zero past its end), read from ``buffer`` (uint8, with
    8 spare bytes per word past the end); ``masks[word][length]`` keeps a name of that
    length's bytes in that word."""
    # Every 8 bytes from every offset, as one (unaligned) uint64 per offset.
    windows = np.ndarray((len(buffer) - 7,), dtype=np.uint64, buffer=buffer.data, strides=(1,))
    return [windows[starts + 8 * index] & masks[index][lengths] for index in range(len(masks))]


class NameIndex:
    """The row of each of ``names`` (distinct), for lists of them at a time."""

    @classmethod
    def of(cls, names: Sequence[str]) -> NameIndex | None:
        """The index of ``names``; None where a lookup name by name does better: no
        names, a name twice (the dict keeps the last row), a line break in one, a name
        longer than ``_LONGEST_INDEXED`` bytes (every lookup reads as many words as the
        longest name has), or a big-endian machine, whose words the masks do not fit."""
        if (
            not names
            or sys.byteorder != "little"
            or len(set(names)) != len(names)
            or any("\n" in name for name in names)
            or max(len(_encode(name)) for name in names) > _LONGEST_INDEXED
        ):
            return None
        return cls(names)

    def __init__(self, names: Sequence[str]) -> None:
        encoded = [_encode(name) for name in names]
        self._longest = max((len(name) for name in encoded), default=0)
        """Bytes of the longest name (a longer one is no node's)."""
        count = max(1, -(-self._longest // 8))
        length = np.arange(self._longest + 1)
        self._masks = np.stack(
            [_LOW_BYTES[np.clip(length - 8 * index, 0, 8)] for index in range(count)]
        )
        """Per word and name length, the mask of the name's bytes in that word."""
        buffer, starts, self._lengths = _split(encoded, 8 * count)
        self._known = _words(buffer, starts, self._lengths, self._masks)
        bits = max(4, (4 * len(encoded) - 1).bit_length())
        size = 1 << bits
        self._bits = np.uint64(bits)
        self._mask = np.uint64(size - 1)
        self._table = np.full(size, -1, dtype=np.int64)
        slots = _hash(self._known, self._bits)
        for row, slot in enumerate(slots.tolist()):
            while self._table[slot] >= 0:
                slot = (slot + 1) & (size - 1)
            self._table[slot] = row

    def rows_of(self, names: list[str]) -> IntArray | None:
        """Rows of ``names``, in their order; None when a name is not one of the index's
        (or holds a line break): look those up one by one."""
        if not names:
            return np.zeros(0, dtype=np.int64)
        spare = 8 * len(self._masks)
        try:
            joined = _encode("\n".join(names))
        except TypeError:  # not all strings: none of them a node's name
            return None
        buffer, starts, lengths = _split_joined(joined, len(names), spare)
        if buffer is None or lengths.max() > self._longest:
            return None
        words = _words(buffer, starts, lengths, self._masks)
        slots = _hash(words, self._bits)
        found: IntArray = self._table[slots]
        rows: IntArray | None = None
        pending = np.arange(len(names))
        for _ in range(_MAX_PROBES):
            if (found < 0).any():
                return None  # an empty slot before the name's: no node is called that
            # The length too: a name with a NUL byte at its end has the same words.
            same = self._lengths[found] == lengths
            for known, asked in zip(self._known, words, strict=True):
                same &= known[found] == asked
            if rows is None:
                if same.all():
                    return found
                rows = found.copy()
            else:
                rows[pending[same]] = found[same]
            pending = pending[~same]
            if not len(pending):
                return rows
            words, lengths = [word[~same] for word in words], lengths[~same]
            slots = (slots[~same] + np.uint64(1)) & self._mask
            found = self._table[slots]
        return None


def _encode(name: str) -> bytes:
    # One to one, lone surrogates too (JSON can carry them; UTF-8 proper cannot).
    return name.encode(errors="surrogatepass")


def _split(encoded: list[bytes], spare: int) -> tuple[np.ndarray, IntArray, IntArray]:
    buffer, starts, lengths = _split_joined(b"\n".join(encoded), len(encoded), spare)
    if buffer is None:
        raise ValueError("a node name holds a line break")
    return buffer, starts, lengths


def _split_joined(
    joined: bytes, count: int, spare: int
) -> tuple[np.ndarray, IntArray, IntArray] | tuple[None, IntArray, IntArray]:
    """``joined`` (``count`` names, line breaks between) as a buffer with ``spare`` zero
    bytes after it, each name's start and length; None for the buffer when a name
    holds a line break."""
    buffer = np.zeros(len(joined) + spare, dtype=np.uint8)
    buffer[: len(joined)] = np.frombuffer(joined, dtype=np.uint8)
    breaks = np.flatnonzero(buffer[: len(joined)] == _SEPARATOR)
    starts = np.empty(count, dtype=np.int64)
    lengths = np.empty(count, dtype=np.int64)
    if len(breaks) != count - 1:
        return None, starts, lengths
    starts[0] = 0
    starts[1:] = breaks + 1
    lengths[:-1] = breaks
    lengths[-1] = len(joined)
    lengths -= starts
    return buffer, starts, lengths
