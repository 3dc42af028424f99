"""HostPriorityEncoder writes exactly what orjson would for the list of dicts."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from extender.wire import HostPriorityEncoder

NAMES = ["a", "gpu-node-00001", 'odd"name\\', "ünïcode-node"]


@pytest.mark.parametrize(
    ("rows", "scores"),
    [
        ([0, 1, 2, 3], [10, 0, 5, 9]),
        ([3, 1], [0, 10]),  # a subset, in request order
        ([], []),  # nobody passed: an empty list
    ],
    ids=["all", "subset", "empty"],
)
def test_encode_matches_orjson_of_dicts(rows: list[int], scores: list[int]) -> None:
    encoded = HostPriorityEncoder().encode(
        NAMES, np.array(rows, dtype=np.int64), np.array(scores, dtype=np.int64)
    )
    expected = [{"Host": NAMES[r], "Score": s} for r, s in zip(rows, scores, strict=True)]
    assert orjson.loads(encoded.body) == expected
    assert encoded.body == orjson.dumps(expected)


def test_encode_follows_a_new_node_list() -> None:
    encoder = HostPriorityEncoder()
    encoder.encode(NAMES, np.array([0]), np.array([1]))
    renamed = ["x", "y"]
    body = encoder.encode(renamed, np.array([1, 0]), np.array([2, 3])).body
    assert orjson.loads(body) == [{"Host": "y", "Score": 2}, {"Host": "x", "Score": 3}]


def test_encode_names_for_unknown_hosts() -> None:
    body = HostPriorityEncoder.encode_names(["known", "unknown"], [10, 5]).body
    assert orjson.loads(body) == [{"Host": "known", "Score": 10}, {"Host": "unknown", "Score": 5}]
