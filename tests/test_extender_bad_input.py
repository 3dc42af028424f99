"""Whatever arrives, the answer is a 200 or a 4xx with a one-line reason: never a 5xx."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from extender_builders import (
    bind_body,
    filter_body,
    node,
    pod,
    request,
    serve,
    service,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extender import create_app

NAMES = ["gpu-0", "gpu-1"]


def good_pod() -> dict[str, Any]:
    return pod("p", request(gpus=1), uid="11111111-2222-3333-4444-555555555555")


def with_pod_field(path: list[str | int], value: Any) -> dict[str, Any]:
    body = filter_body(good_pod(), NAMES)
    target: Any = body["Pod"]
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return body


BAD_FILTER_BODIES = [
    pytest.param(b"", "empty body", id="empty"),
    pytest.param(b"{nope", "body is not JSON", id="malformed-json"),
    pytest.param(b"[1, 2]", "body is a JSON list; expected an object", id="array"),
    pytest.param(b'"Pod"', "body is a JSON str", id="string"),
    pytest.param(
        orjson.dumps({"Nodes": None, "NodeNames": NAMES}), "Pod is missing", id="missing-pod"
    ),
    pytest.param(orjson.dumps({"Pod": None, "NodeNames": NAMES}), "Pod is missing", id="null-pod"),
    pytest.param(orjson.dumps({"Pod": 7, "NodeNames": NAMES}), "Pod: ", id="pod-wrong-type"),
    pytest.param(
        orjson.dumps({"Pod": good_pod(), "Nodes": None, "NodeNames": None}),
        "NodeNames and Nodes are both null",
        id="no-nodes",
    ),
    pytest.param(
        orjson.dumps(filter_body(good_pod(), [])), "the node list is empty", id="empty-node-list"
    ),
    pytest.param(
        orjson.dumps(filter_body(good_pod(), ["gpu-0", "gpu-1", "gpu-0"])),
        "node 'gpu-0' appears more than once",
        id="duplicate-nodes",
    ),
    pytest.param(
        orjson.dumps({"Pod": good_pod(), "NodeNames": "gpu-0"}),
        "NodeNames: ",
        id="names-not-a-list",
    ),
    pytest.param(
        orjson.dumps({"Pod": good_pod(), "NodeNames": [1, 2]}),
        "NodeNames.0: ",
        id="names-not-strings",
    ),
    pytest.param(
        orjson.dumps(with_pod_field(["metadata", "uid"], None)),
        "Pod.metadata needs a name and a uid",
        id="no-uid",
    ),
    pytest.param(
        orjson.dumps(
            with_pod_field(["spec", "containers", 0, "resources", "requests", "cpu"], "12x")
        ),
        "Pod.spec.containers[0].resources.requests.cpu: '12x' is not a quantity",
        id="bad-quantity",
    ),
    pytest.param(
        orjson.dumps(
            with_pod_field(["spec", "containers", 0, "resources", "requests", "cpu"], [1])
        ),
        "Pod.spec.containers.0.resources.requests.cpu: ",
        id="quantity-wrong-type",
    ),
    pytest.param(
        orjson.dumps(
            with_pod_field(
                ["spec", "containers", 0, "resources", "requests", "nvidia.com/gpu"], "-2"
            )
        ),
        "is negative",
        id="negative-gpus",
    ),
    pytest.param(
        orjson.dumps(
            with_pod_field(
                ["spec", "containers", 0, "resources"],
                {"requests": {"fairpack.io/gpu-milli": "1500"}, "limits": None},
            )
        ),
        "more than one GPU",
        id="share-above-one-gpu",
    ),
    pytest.param(
        orjson.dumps(
            with_pod_field(
                ["spec", "containers", 0, "resources", "requests", "fairpack.io/gpu-milli"], "500"
            )
        ),
        "Pod asks for both nvidia.com/gpu and fairpack.io/gpu-milli",
        id="whole-and-share",
    ),
    pytest.param(
        orjson.dumps(with_pod_field(["spec", "priority"], "high")),
        "Pod.spec.priority: ",
        id="priority-string",
    ),
    pytest.param(b"[" * 5000 + b"]" * 5000, "body is not JSON", id="too-deep"),
]


@pytest.mark.parametrize(("body", "reason"), BAD_FILTER_BODIES)
async def test_bad_filter_bodies_get_a_400_with_the_reason_in_error(
    body: bytes, reason: str
) -> None:
    async with serve(service([node("gpu-0"), node("gpu-1")])) as client:
        response = await client.post("/filter", data=body)
        answer = orjson.loads(await response.read())
    assert response.status == 400
    assert reason in answer["Error"]
    assert "\n" not in answer["Error"]
    assert set(answer) == {
        "Nodes",
        "NodeNames",
        "FailedNodes",
        "FailedAndUnresolvableNodes",
        "Error",
    }


@pytest.mark.parametrize(
    ("verb", "body", "reason"),
    [
        pytest.param(
            "prioritize",
            {"Pod": None, "NodeNames": NAMES},
            "Pod is missing",
            id="prioritize-no-pod",
        ),
        pytest.param(
            "prioritize",
            filter_body(good_pod(), []),
            "the node list is empty",
            id="prioritize-empty",
        ),
        pytest.param(
            "bind", {"PodName": "p"}, "PodNamespace: Field required", id="bind-missing-fields"
        ),
        pytest.param(
            "bind",
            {"PodName": "", "PodNamespace": "ns", "PodUID": "u", "Node": "gpu-0"},
            "PodName: String should have at least 1 character",
            id="bind-empty-name",
        ),
        pytest.param(
            "bind",
            {"PodName": 3, "PodNamespace": "ns", "PodUID": "u", "Node": "n"},
            "PodName: ",
            id="bind-wrong-type",
        ),
        pytest.param(
            "preempt",
            {"Pod": good_pod(), "NodeNameToVictims": None, "NodeNameToMetaVictims": None},
            "both null",
            id="preempt-no-victims",
        ),
        pytest.param(
            "preempt",
            {"Pod": good_pod(), "NodeNameToMetaVictims": {"gpu-0": {"Pods": [{"UID": 5}]}}},
            "NodeNameToMetaVictims.gpu-0.Pods.0.UID: ",
            id="preempt-uid-wrong-type",
        ),
    ],
)
async def test_bad_bodies_of_other_verbs_get_a_400(verb: str, body: Any, reason: str) -> None:
    async with serve(service([node("gpu-0"), node("gpu-1")])) as client:
        response = await client.post(f"/{verb}", data=orjson.dumps(body))
        answer = orjson.loads(await response.read())
    assert response.status == 400
    assert reason in answer["Error"]


async def test_a_huge_body_gets_a_413() -> None:
    async with serve(service([node("gpu-0")]), max_body_bytes=1024) as client:
        response = await client.post(
            "/filter", data=orjson.dumps(filter_body(good_pod(), ["x" * 2000]))
        )
        answer = orjson.loads(await response.read())
    assert response.status == 413
    assert answer["Error"] == "body too large (limit 1024 bytes)"


async def test_unknown_node_names_are_not_an_error() -> None:
    async with serve(service([node("gpu-0")])) as client:
        response = await client.post(
            "/filter", data=orjson.dumps(filter_body(good_pod(), ["gpu-0", "nowhere"]))
        )
        answer = orjson.loads(await response.read())
    assert response.status == 200
    assert answer["NodeNames"] == ["gpu-0"]


async def test_a_pod_asking_for_more_gpus_than_int32_holds_does_not_break_later_filters() -> None:
    # The shape learner keeps GPU counts as int32: one such pod made every new pod's
    # filter a 500 from then on.
    async with serve(service([node("gpu-0"), node("gpu-1")])) as client:
        huge = pod("huge", request(gpus=1))
        huge["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] = "1e18"
        response = await client.post("/filter", data=orjson.dumps(filter_body(huge, NAMES)))
        answer = orjson.loads(await response.read())
        assert response.status == 200
        assert answer["NodeNames"] == []
        for name in ("next-0", "next-1"):
            response = await client.post(
                "/filter", data=orjson.dumps(filter_body(pod(name, request(gpus=1)), NAMES))
            )
            answer = orjson.loads(await response.read())
            assert response.status == 200, answer
            assert len(answer["NodeNames"]) == 1


async def test_bind_is_refused_for_a_pod_already_bound() -> None:
    async with serve(service([node("gpu-0"), node("gpu-1")])) as client:
        p = good_pod()
        await client.post("/filter", data=orjson.dumps(filter_body(p, NAMES)))
        await client.post("/bind", data=orjson.dumps(bind_body(p, "gpu-0")))
        response = await client.post("/bind", data=orjson.dumps(bind_body(p, "gpu-1")))
        answer = orjson.loads(await response.read())
    assert response.status == 200
    assert answer["Error"] == "pod team-a/p is already bound to node gpu-0"


# -- fuzzing -------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
quantities = st.one_of(
    st.text(max_size=6),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.sampled_from(["1", "500m", "16Gi", "1e3", "2E-3", "0.5", "-1", "1.5Ki", "1e400", "."]),
    json_values,
)
resource_names = st.sampled_from(["cpu", "memory", "nvidia.com/gpu", "fairpack.io/gpu-milli", "x"])
containers = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=4),
        "resources": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {},
                optional={
                    "requests": st.none() | st.dictionaries(resource_names, quantities, max_size=3),
                    "limits": st.none() | st.dictionaries(resource_names, quantities, max_size=3),
                },
            ),
            json_values,
        ),
        "restartPolicy": st.none() | st.sampled_from(["Always", "Never"]) | json_values,
    },
)
pods = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "metadata": st.one_of(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "name": st.none() | st.text(max_size=6),
                        "namespace": st.none() | st.text(max_size=6),
                        "uid": st.none() | st.sampled_from(["u1", "u2", ""]),
                        "labels": st.none()
                        | st.dictionaries(st.text(max_size=20), st.text(max_size=12), max_size=3),
                        "annotations": st.none()
                        | st.dictionaries(
                            st.sampled_from(
                                ["fairpack.io/gpu-memory", "fairpack.io/gpu-models", "x"]
                            ),
                            st.text(max_size=8),
                            max_size=2,
                        ),
                        "managedFields": json_values,
                        "creationTimestamp": st.none() | st.text(max_size=25),
                    },
                ),
                json_values,
            ),
            "spec": st.one_of(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "containers": st.none() | st.lists(st.none() | containers, max_size=3),
                        "initContainers": st.none() | st.lists(containers, max_size=2),
                        "overhead": st.none()
                        | st.dictionaries(resource_names, quantities, max_size=2),
                        "priority": st.none() | st.integers() | json_values,
                        "priorityClassName": st.none() | st.text(max_size=20),
                        "nodeSelector": st.none()
                        | st.dictionaries(st.text(max_size=25), st.text(max_size=8), max_size=2),
                    },
                ),
                json_values,
            ),
        },
    ),
    json_values,
)
names = st.lists(st.sampled_from(["gpu-0", "gpu-1", "ghost", ""]) | st.text(max_size=5), max_size=5)
extender_args = st.fixed_dictionaries(
    {},
    optional={
        "Pod": st.none() | pods,
        "NodeNames": st.none() | names | json_values,
        "Nodes": st.none()
        | st.fixed_dictionaries(
            {}, optional={"items": st.none() | st.lists(json_values, max_size=3)}
        )
        | json_values,
    },
)
meta_victims = st.dictionaries(
    st.text(max_size=6) | st.sampled_from(["gpu-0", "gpu-1"]),
    st.none()
    | st.fixed_dictionaries(
        {},
        optional={
            "Pods": st.none()
            | st.lists(
                st.none() | st.fixed_dictionaries({"UID": st.text(max_size=4) | json_values})
            ),
            "NumPDBViolations": st.integers() | json_values,
        },
    ),
    max_size=3,
)
bodies = {
    "filter": extender_args,
    "prioritize": extender_args,
    "preempt": st.fixed_dictionaries(
        {},
        optional={
            "Pod": st.none() | pods,
            "NodeNameToMetaVictims": st.none() | meta_victims | json_values,
            "NodeNameToVictims": st.none() | json_values,
        },
    ),
    "bind": st.fixed_dictionaries(
        {},
        optional={
            "PodName": st.text(max_size=4) | json_values,
            "PodNamespace": st.text(max_size=4) | json_values,
            "PodUID": st.sampled_from(["u1", "u2"]) | json_values,
            "Node": st.sampled_from(["gpu-0", "gpu-1", "ghost"]) | json_values,
        },
    ),
}


class _LoopThread:
    """An event loop in a thread, so hypothesis (synchronous) can drive the async test client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def fuzz_client() -> Iterator[tuple[_LoopThread, TestClient[Any, Any]]]:
    runner = _LoopThread()
    extender = service([node("gpu-0"), node("gpu-1", gpus=4, model="L4", gpu_memory_mib=24576)])

    async def start() -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(extender)))
        await client.start_server()
        return client

    client = runner.run(start())
    yield runner, client
    runner.run(client.close())
    runner.close()


async def _post(client: TestClient[Any, Any], verb: str, body: Any) -> tuple[int, bytes]:
    # The standard library writes what orjson will not (integers beyond 64 bits).
    response = await client.post(f"/{verb}", data=json.dumps(body))
    return response.status, await response.read()


@pytest.mark.parametrize("verb", list(bodies))
@settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
@given(data=st.data())
def test_random_bodies_never_get_a_5xx(
    fuzz_client: tuple[_LoopThread, TestClient[Any, Any]], verb: str, data: st.DataObject
) -> None:
    runner, client = fuzz_client
    body = data.draw(bodies[verb] | json_values)
    status, payload = runner.run(_post(client, verb, body))
    assert status in (200, 400), payload
    if status == 400:
        reason = orjson.loads(payload)["Error"]
        assert reason and "\n" not in reason


async def test_a_client_gone_before_its_answer_is_sent_is_logged_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    extender = service([node("gpu-0"), node("gpu-1")])
    filter_ = extender.filter
    requests: list[web.Request] = []

    def hang_up_then_filter(*args: Any) -> Any:
        requests[-1].transport.close()  # type: ignore[union-attr]
        return filter_(*args)

    extender.filter = hang_up_then_filter  # type: ignore[method-assign]

    @web.middleware
    async def remember(request: web.Request, handler: Any) -> web.StreamResponse:
        requests.append(request)
        return await handler(request)

    app = create_app(extender)
    app.middlewares.append(remember)
    async with TestClient(TestServer(app)) as client:
        with pytest.raises(aiohttp.ClientError):
            await client.post("/filter", data=orjson.dumps(filter_body(good_pod(), NAMES)))
        await asyncio.sleep(0.1)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not extender.unsettled  # the bookkeeping was still done
    assert extender.explain("team-a/p")["filter"]["top"]  # type: ignore[index]


async def test_a_body_that_never_ends_gets_a_408() -> None:
    # A Content-Length longer than what is sent: without a deadline the handler waited
    # for the rest as long as the client kept the connection (and shutdown waited on it).
    async with serve(service([node("gpu-0")]), body_timeout_s=0.2) as client:
        host, port = client.server.host, client.server.port
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"POST /filter HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        finally:
            writer.close()
        assert head.startswith(b"HTTP/1.1 408 ")
        assert b"Connection: close" in head
        response = await client.post(
            "/filter", data=orjson.dumps(filter_body(good_pod(), ["gpu-0"]))
        )
        assert response.status == 200


async def test_a_pod_without_a_resource_version_is_read_anew_each_time() -> None:
    # The request cache is keyed on UID and resourceVersion: without a version, the
    # first body's request was answered for every later one with the same UID.
    async with serve(service([node("gpu-0")])) as client:
        for gpus, passed in ((1, ["gpu-0"]), (64, []), (1, ["gpu-0"])):
            p = pod("p", request(gpus=gpus), uid="11111111-2222-3333-4444-555555555555")
            del p["metadata"]["resourceVersion"]
            response = await client.post("/filter", data=orjson.dumps(filter_body(p, ["gpu-0"])))
            answer = orjson.loads(await response.read())
            assert (response.status, answer["NodeNames"]) == (200, passed)


@pytest.mark.parametrize(
    "head",
    [
        b"POST /filter HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
        b"POST /filter HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n{}",
    ],
    ids=["length-not-a-number", "length-and-chunked"],
)
async def test_a_request_aiohttp_cannot_parse_is_one_warning_line(
    head: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # aiohttp answers 400 itself and logged an ERROR with a traceback: the client's fault.
    async with serve(service([node("gpu-0")])) as client:
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        writer.write(head)
        await writer.drain()
        try:
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout=5)
        finally:
            writer.close()
    assert answer.split()[1] == b"400"
    (record,) = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "\n" not in record.getMessage() and "(answered 400)" in record.getMessage()
