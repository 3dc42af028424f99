"""NodeNamesMemo (extender/app.py): a body read with its node list apart means what it says."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from builders import PROPERTY
from extender_builders import filter_body, nodes, pod, request, service
from hypothesis import example, given
from hypothesis import strategies as st

from extender import Extender, LiveConfig, app
from extender.app import _IN_PLACE_FROM_BYTES, NodeNamesMemo
from extender.config import FairpackConfig
from extender.errors import BadRequestError
from extender.wire import ExtenderArgs
from scoring.names import EncodedNames

LISTS = (["gpu-0", "gpu-1", "gpu-2"], ["gpu-0", "gpu-2"], ["a", "b"])


def body_of(*items: tuple[str, Any]) -> bytes:
    return orjson.dumps(dict(items))


def plain(body: bytes) -> tuple[ExtenderArgs, Any]:
    raw = orjson.loads(body)
    return ExtenderArgs.model_validate(raw), raw.get("Nodes")


def test_the_same_list_is_parsed_once() -> None:
    memo = NodeNamesMemo()
    names = ["gpu-0", "gpu-1"]
    first, _ = memo.load(orjson.dumps(filter_body(pod("a", request(gpus=1)), names)))
    for name in ("b", "c"):
        body = orjson.dumps(filter_body(pod(name, request(gpus=2)), names))
        args, _ = memo.load(body)
        assert args == plain(body)[0]
        assert args.node_names is first.node_names  # not parsed again


def test_a_list_that_changed_is_parsed() -> None:
    memo = NodeNamesMemo()
    p = pod("a", request(gpus=1))
    memo.load(orjson.dumps(filter_body(p, ["gpu-0", "gpu-1"])))
    args, _ = memo.load(orjson.dumps(filter_body(p, ["gpu-0", "gpu-2"])))
    assert args.node_names == ["gpu-0", "gpu-2"]


def test_a_bad_body_with_the_known_list_is_refused_as_before() -> None:
    memo = NodeNamesMemo()
    tail = b',"NodeNames":["gpu-0"]}'
    memo.load(b'{"Pod":null' + tail)
    memo.load(b'{"Pod":null' + tail)
    with pytest.raises(BadRequestError, match="body is not JSON"):
        memo.load(b'{"Pod":{"metadata":' + tail)


def test_a_list_nested_last_in_the_pod_is_never_taken_for_the_node_list() -> None:
    memo = NodeNamesMemo()
    nested = {"a": 1, "NodeNames": ["x"]}  # its bytes end the body: the same each time
    for names in (["gpu-0"], ["gpu-1"], ["gpu-2"]):
        args, _ = memo.load(body_of(("NodeNames", names), ("Pod", nested)))
        assert args.node_names == names


# Pods that carry the key themselves, nested at its end, where a split would cut them.
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(["", "x", ',"NodeNames":']),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "NodeNames", "metadata"]), inner, max_size=3)
    ),
    max_leaves=8,
)
_PODS = (
    st.builds(lambda name: pod(name, request(gpus=1)), st.sampled_from(["p", "q"]))
    | st.builds(lambda names: {"a": 1, "NodeNames": names}, st.sampled_from(LISTS))
    | _VALUES
)


AFTER_THE_LIST = body_of(
    ("Nodes", None), ("NodeNames", LISTS[0]), ("Pod", pod("p", request(gpus=1)))
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Filter bodies in any key order, with a known list or another, or none."""
    values = {
        "Pod": draw(_PODS),
        "Nodes": draw(st.none() | st.just({"items": [{"metadata": {"name": "gpu-0"}}]})),
        "NodeNames": draw(st.none() | st.sampled_from(LISTS)),
    }
    keys = [key for key in draw(st.permutations(list(values))) if draw(st.integers(0, 5))]
    return body_of(*((key, values[key]) for key in keys))


@PROPERTY
@given(
    # A few bodies, each sent again and again in some order, as kube-scheduler does.
    sequence=st.lists(bodies(), min_size=1, max_size=3).flatmap(
        lambda pool: st.lists(st.sampled_from(pool), min_size=1, max_size=8)
    )
)
# Keys after the list: the bytes that end the body carry more than the list.
@example(sequence=[AFTER_THE_LIST, AFTER_THE_LIST])
def test_every_body_means_what_it_says(sequence: list[bytes]) -> None:
    memo = NodeNamesMemo()
    for body in sequence:
        assert_reads_as_a_plain_parse(memo, body)


def assert_reads_as_a_plain_parse(memo: NodeNamesMemo, body: bytes) -> None:
    try:
        expected, expected_nodes = plain(body)
    except Exception:  # what a plain parse refuses, the memo refuses too
        with pytest.raises(BadRequestError):
            memo.load(body)
        return
    args, raw = memo.load(body)
    assert args == expected
    assert raw.get("Nodes") == expected_nodes


@pytest.mark.parametrize("names", [["a", 5], ["a", None], [["a"]], [], "a", {"a": 1}], ids=repr)
def test_a_list_that_is_not_all_names_means_what_a_plain_parse_says(names: Any) -> None:
    memo = NodeNamesMemo()
    assert_reads_as_a_plain_parse(
        memo, body_of(("Pod", pod("p", request(gpus=1))), ("NodeNames", names))
    )


KNOWN = b',"NodeNames":["a","b"]}'
POD = orjson.dumps(pod("p", request(gpus=1)))


@pytest.mark.parametrize(
    "body",
    [
        b"{" + KNOWN,  # no member before the list: not JSON
        b"{ \n" + KNOWN,
        b'{"Pod":' + POD + b',"NodeNames":5' + KNOWN,  # the last of two keys counts
        b'{"Pod":' + POD + b',"node_names":5' + KNOWN,  # the model reads this name too
        b'{"Pod":' + POD + b',"Node\\u004eames":5' + KNOWN,  # the same key, escaped
        b'{"Pod":' + POD + b',"Nodes":{"items":[]}' + KNOWN,
    ],
    ids=["empty-head", "blank-head", "duplicate", "field-name", "escaped", "nodes-too"],
)
def test_a_known_list_after_an_odd_head_means_what_a_plain_parse_says(body: bytes) -> None:
    memo = NodeNamesMemo()
    memo.load(b'{"Pod":' + POD + KNOWN)  # the list's bytes, remembered
    assert_reads_as_a_plain_parse(memo, body)


# -- a long list, read where it lies in the body -------------------------------------------------

LONG = [f"gpu-node-{i:05d}.example.internal" for i in range(_IN_PLACE_FROM_BYTES // 30)]
"""Enough names that the list is read in place rather than parsed as JSON."""


def test_a_long_list_as_go_writes_it_is_read_in_place() -> None:
    body = orjson.dumps(filter_body(pod("p", request(gpus=1)), LONG))
    args, _ = NodeNamesMemo().load(body)
    assert isinstance(args.node_names, EncodedNames)
    assert args == plain(body)[0]
    assert list(args.node_names) == LONG
    assert args.node_names[-1] == LONG[-1]
    assert args.model_dump(by_alias=True)["NodeNames"] == LONG  # dumped as the list it is
    assert orjson.loads(args.model_dump_json())["node_names"] == LONG


# Characters a name may hold in JSON, and those that need care: a quote or a backslash
# (escaped), a comma (between names), a control character (escaped), non-ASCII, DEL.
_ODD_NAMES = st.text(
    alphabet=st.sampled_from(list('ab-.,"\\[]{}: \x00\x1f\x7fé')), min_size=0, max_size=6
)


@PROPERTY
@given(odd=st.lists(st.tuples(st.integers(0, len(LONG)), _ODD_NAMES), min_size=1, max_size=3))
def test_a_long_list_with_odd_names_means_what_a_plain_parse_says(
    odd: list[tuple[int, str]],
) -> None:
    names = list(LONG)
    for at, name in odd:
        names.insert(at, name)
    assert_reads_as_a_plain_parse(NodeNamesMemo(), long_body(names))


def long_body(names: list[str]) -> bytes:
    return orjson.dumps(filter_body(pod("p", request(gpus=1)), names))


MIDDLE = f'"{LONG[len(LONG) // 2]}"'.encode()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # Around the list.
        (b'"]}', b'"] }'),
        (b'"]}', b'"]}\n'),
        (b'"]}', b'"}}'),
        (b'"]}', b'"]]}'),
        (b'"]}', b'",]}'),
        (b'"]}', b'"]}}'),
        (b'"]}', b"]}"),
        (b':["', b': ["'),
        (b':["', b':[["'),
        (b':["', b':[,"'),
        (b':["', b':"'),
        # Between two names.
        (MIDDLE + b",", MIDDLE + b", "),
        (MIDDLE + b",", MIDDLE + b" ,"),
        (MIDDLE + b",", MIDDLE + b"x"),
        (MIDDLE + b",", MIDDLE + b",,"),
        (MIDDLE + b",", MIDDLE + b',"",'),
        (MIDDLE + b",", MIDDLE + b"],["),
        (MIDDLE + b",", MIDDLE + b",0,"),
        (MIDDLE + b",", MIDDLE + b',"x'),
        (MIDDLE + b",", MIDDLE[:-1] + b","),
        # In a name.
        (MIDDLE, MIDDLE[:-1] + b'\\""'),
        (MIDDLE, MIDDLE[:-1] + b'\\\\"'),
        (MIDDLE, MIDDLE[:-1] + b'\\u0041"'),
        (MIDDLE, MIDDLE[:-1] + b'\t"'),
        (MIDDLE, MIDDLE[:-1] + b'\x7f"'),
        (MIDDLE, MIDDLE[:-1] + "é".encode() + b'"'),
        (MIDDLE, MIDDLE[:-1] + b'\xff"'),
        (MIDDLE, b'""'),
    ],
)
def test_a_long_list_changed_a_little_means_what_a_plain_parse_says(old: bytes, new: bytes) -> None:
    body = long_body(LONG)
    assert body.count(old) == 1
    assert_reads_as_a_plain_parse(NodeNamesMemo(), body.replace(old, new))


@pytest.mark.parametrize(
    "tail",
    [b'["]}', b'[""]}', b'["a"]}', b'["a","b"]}', b'["","a",""]}', b'[","]}', b'["a",","]}'],
)
def test_a_short_list_read_in_place_means_what_a_plain_parse_says(
    tail: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "_IN_PLACE_FROM_BYTES", 0)
    assert_reads_as_a_plain_parse(NodeNamesMemo(), b'{"Pod":null,"NodeNames":' + tail)


@pytest.mark.parametrize("passes", ["best", "feasible"])
@pytest.mark.parametrize("unknown", [[], ["gpu-node-not-yet-seen"]], ids=["known", "unknown"])
async def test_a_long_list_read_in_place_gets_the_answers_a_parsed_one_does(
    passes: str, unknown: list[str]
) -> None:
    # Nodes of two sizes (and one the view does not know), in a shuffled order.
    specs = [
        *nodes(500, prefix="gpu-node-in-zone-a-"),
        *nodes(500, prefix="l4-node-in-zone-b-", gpus=4, model="L4", gpu_memory_mib=24_576),
    ]
    names = [spec.name for spec in specs] + unknown
    order = np.random.default_rng(0).permutation(len(names))
    asked = [names[i] for i in order]

    def extender() -> Extender:
        return service(specs, config=LiveConfig(FairpackConfig(filter_passes=passes)))

    in_place, parsed = extender(), extender()
    filter_in_place = app._filter_with(NodeNamesMemo())
    prioritize_in_place = app._prioritize_with(NodeNamesMemo())
    # Some fit (big and small), one fits nowhere: its failed nodes are listed by name.
    for index, gpus in enumerate([1, 8, 4, 16, 2]):
        body = orjson.dumps(filter_body(pod(f"p-{index}", request(gpus=gpus)), asked))
        answer = await filter_in_place(in_place, body)
        assert isinstance(in_place._known_nodes["filter"].names, EncodedNames)
        assert answer == parsed.filter(plain(body)[0])
        assert bool(answer["NodeNames"]) is (gpus <= 8)
        assert len(answer["FailedAndUnresolvableNodes"]) == (0 if gpus <= 8 else len(specs))
        prioritized = await prioritize_in_place(in_place, body)
        assert prioritized.body == parsed.prioritize(plain(body)[0]).body
        in_place.view.settle()
        parsed.view.settle()
