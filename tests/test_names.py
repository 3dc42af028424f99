"""NameIndex (scoring/names.py): a row for the very name, or none at all."""

from __future__ import annotations

import numpy as np
import pytest
from builders import PROPERTY
from hypothesis import given
from hypothesis import strategies as st

from scoring import ClusterState, NodeSpec
from scoring.names import _LONGEST_INDEXED, EncodedNames, NameIndex
from scoring.state import _NAME_INDEX_FROM

# Node-like names of every length around the 8-byte words, some not ASCII, and the
# bytes that could fool a word-by-word comparison (NUL, a line break).
_NAMES = st.text(alphabet=st.sampled_from(list("ab-.09é\x00\n")), min_size=0, max_size=27)


@PROPERTY
@given(
    known=st.lists(
        _NAMES.filter(lambda name: "\n" not in name), min_size=1, max_size=40, unique=True
    ),
    asked=st.lists(st.integers(0, 10_000) | _NAMES, max_size=60),
)
def test_a_row_is_found_for_the_very_name_or_none_is(
    known: list[str], asked: list[int | str]
) -> None:
    index = NameIndex.of(known)
    assert index is not None
    # Known names by position (most of the list), and other strings besides.
    names = [known[item % len(known)] if isinstance(item, int) else item for item in asked]
    encoded = EncodedNames.join(names)
    rows = None if encoded is None else index.rows_of(encoded)
    row_of = {name: row for row, name in enumerate(known)}
    if all(name in row_of for name in names):
        assert rows is not None
    if rows is not None:
        assert rows.tolist() == [row_of[name] for name in names]


@pytest.mark.parametrize(
    ("known", "asked"),
    [
        (["a", "bb"], ["a\x00"]),  # the same words as "a": the length tells them apart
        (["", "0"], ["\x00"]),
        (["abcdefgh", "b"], ["abcdefgX"]),  # the last byte of a word
        (["abcdefghijklmnop", "b"], ["abcdefghijklmnoX"]),
        (["abcdefghijklmnopq", "b"], ["abcdefghijklmnopX"]),  # a word with one byte
        (["a"], ["a", 5]),  # not a name at all
        (["a"], ["\ud800"]),  # a lone surrogate, as JSON may carry
    ],
)
def test_a_name_that_is_none_of_the_nodes_is_not_found(known: list[str], asked: list) -> None:
    index, encoded = NameIndex.of(known), EncodedNames.join(asked)
    assert index is not None
    assert encoded is None or index.rows_of(encoded) is None


def test_every_node_of_a_large_cluster_is_found_in_any_order() -> None:
    nodes = [NodeSpec(f"gpu-node-{i:05d}.example.internal", 8_000, 1_024, 1) for i in range(5_000)]
    state = ClusterState.from_nodes(nodes)
    order = np.random.default_rng(0).permutation(len(nodes))
    names = [nodes[i].name for i in order]
    assert state.rows_of(names).tolist() == order.tolist()
    index = state._names[0]
    encoded = EncodedNames.join(names)
    assert index is not None and encoded is not None
    assert index.rows_of(encoded) is not None  # found at once
    # An unknown name among them: left out, as a lookup one by one leaves it.
    assert (
        state.rows_of([*names[:_NAME_INDEX_FROM], "nope"]).tolist()
        == order[:_NAME_INDEX_FROM].tolist()
    )


def test_names_it_cannot_index_are_looked_up_one_by_one() -> None:
    assert NameIndex.of([]) is None
    assert NameIndex.of(["a", "b\nc"]) is None
    assert NameIndex.of(["a", "b", "a"]) is None  # the dict keeps the last row
    assert NameIndex.of(["a", "x" * (_LONGEST_INDEXED + 1)]) is None
    assert NameIndex.of(["a", "x" * _LONGEST_INDEXED]) is not None
    too_long = EncodedNames.join(["a", "x" * (_LONGEST_INDEXED + 1)])
    assert too_long is not None
    with pytest.raises(ValueError, match="65 bytes"):
        NameIndex(too_long)
    # No nodes yet (before the first sync): every name is unknown, nothing fails.
    assert ClusterState.from_nodes([]).rows_of(["x"] * 3_000).tolist() == []
    nodes = [NodeSpec(f"n{i}" + ("\n" if i == 0 else ""), 8_000, 1_024) for i in range(2_500)]
    state = ClusterState.from_nodes(nodes)
    names = [node.name for node in reversed(nodes)]
    assert state.rows_of(names).tolist() == list(range(2_499, -1, -1))


def encoded_apart(names: list[str], separator: bytes) -> EncodedNames:
    """``names`` as a body holds them: ``separator`` between, nothing decoded yet."""
    pieces = [name.encode(errors="surrogatepass") for name in names]
    lengths = np.array([len(piece) for piece in pieces], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths + len(separator))[:-1])).astype(np.int64)
    return EncodedNames(separator.join(pieces), separator, starts, lengths)


@PROPERTY
@given(
    names=st.lists(_NAMES.filter(lambda name: "\n" not in name), min_size=1, max_size=12),
    index=st.integers(-13, 12),
)
def test_encoded_names_read_as_the_names(names: list[str], index: int) -> None:
    for encoded in (EncodedNames.join(names), encoded_apart(names, b'","')):
        assert encoded is not None
        assert len(encoded) == len(names)
        if -len(names) <= index < len(names):
            assert encoded[index] == names[index]
        else:
            with pytest.raises(IndexError):
                encoded[index]
        assert encoded[1:] == names[1:]
        assert encoded == names and names == encoded and list(encoded) == names
        assert encoded != [*names, "x"]
        if names[::-1] != names:
            assert encoded != names[::-1]


def test_encoded_names_are_equal_when_their_names_are() -> None:
    apart, joined = encoded_apart(["a", "b"], b'","'), EncodedNames.join(["a", "b"])
    assert apart == joined and apart == encoded_apart(["a", "b"], b'","')
    assert apart != encoded_apart(["a", "c"], b'","') and apart != EncodedNames.join(["a"])
    assert apart != "a" and apart != ("a", "c")
    assert EncodedNames.join(["a"]) != "a" and encoded_apart(["a"], b'","') != "a"
    assert EncodedNames.join([""]) != EncodedNames.join([])
    assert EncodedNames.join(["a", 5]) is None  # type: ignore[list-item]
    assert EncodedNames.join([]) == []


def test_names_read_where_they_lie_are_found() -> None:
    nodes = [NodeSpec(f"node-{i}", 8_000, 1_024, 1) for i in range(300)]
    state = ClusterState.from_nodes(nodes)
    order = np.random.default_rng(0).permutation(len(nodes))
    names = [nodes[i].name for i in order]
    # However few: already encoded, they are looked up at once.
    assert state.rows_of(encoded_apart(names, b'","')).tolist() == order.tolist()
    assert state.rows_of(encoded_apart([*names[:5], "nope"], b'","')).tolist() == order[:5].tolist()


def test_names_read_one_by_one_and_then_all_at_once_are_the_names() -> None:
    names = [f"node-{i}" for i in range(40)]
    encoded = encoded_apart(names, b'","')
    assert [encoded[i] for i in range(len(names))] == names
    assert [encoded[-i] for i in range(1, len(names) + 1)] == names[::-1]
    for index in (1.0, "1", None):  # not an index, one at a time or all at once alike
        with pytest.raises(TypeError):
            encoded_apart(names, b'","')[index]  # type: ignore[index]
        with pytest.raises(TypeError):
            encoded[index]  # type: ignore[index]
