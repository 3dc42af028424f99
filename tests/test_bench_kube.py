"""``fairpack bench kube`` without a control plane: the checks before a run, and its client
against a fake API server that never binds a pod."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from benchmarks.kube_throughput import Api, BenchError, _settle, fleet_gpus, measure
from extender.cli import main


@pytest.mark.parametrize(
    ("nodes", "gpus"),
    [
        (1, 8),  # one A100 node: 8
        (2, 12),  # A100 + A10G: 8+4
        (5, 32),  # 3 A100 + 2 A10G: 24+8
    ],
    ids=["one-node", "one-of-each", "odd-count"],
)
def test_fleet_gpus(nodes: int, gpus: int) -> None:
    assert fleet_gpus(nodes) == gpus


def test_more_pods_than_the_smallest_fleet_has_gpus_is_refused_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 20 one-GPU pods on 1 node (8 GPUs) would never all bind: a timeout 600 s later.
    argv = ["bench", "kube", "--bin-dir", str(tmp_path), "--nodes", "1,100", "--pods", "20"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "fairpack bench kube: --pods 20 (one GPU each) do not fit the 8 GPUs of --nodes 1;"
        " give fewer pods or more nodes\n"
    )


def _fake_apiserver(answer_text: bool = False, refuse_pods: bool = False) -> web.Application:
    """Takes namespaces and pods, lists none, and watches forever without an event."""

    async def created(request: web.Request) -> web.Response:
        if refuse_pods and request.match_info:
            return web.json_response({"kind": "Status", "code": 500}, status=500)
        return web.json_response(await request.json(), status=201)

    async def pods(request: web.Request) -> web.StreamResponse:
        if not request.query.get("watch"):
            return web.json_response({"metadata": {"resourceVersion": "1"}, "items": []})
        response = web.StreamResponse()
        await response.prepare(request)
        await asyncio.sleep(3600)
        return response

    async def service_account(request: web.Request) -> web.Response:
        if answer_text:
            return web.Response(status=503, text="apiserver is shutting down")
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/api/v1/namespaces", created)
    app.router.add_get("/api/v1/namespaces/{ns}/serviceaccounts/default", service_account)
    app.router.add_get("/api/v1/namespaces/{ns}/pods", pods)
    app.router.add_post("/api/v1/namespaces/{ns}/pods", created)
    return app


async def _api(app: web.Application) -> AsyncIterator[Api]:
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        yield Api(str(server.make_url("")).rstrip("/"), session)


async def test_pods_that_never_bind_end_the_run_after_its_timeout() -> None:
    async for api in _api(_fake_apiserver()):
        with pytest.raises(BenchError, match=r"^only 0 of 3 pods bound after 0s$"):
            await measure(api, "bench-run-1", pods=3, concurrency=2, timeout_s=0.2)


async def test_a_refused_pod_ends_the_run_and_its_watch() -> None:
    async for api in _api(_fake_apiserver(refuse_pods=True)):
        with pytest.raises(
            BenchError, match=r"^POST /api/v1/namespaces/bench-run-1/pods: HTTP 500"
        ):
            await measure(api, "bench-run-1", pods=3, concurrency=2, timeout_s=60)
        await asyncio.sleep(0)  # let the cancelled watch finish
        watches = [t for t in asyncio.all_tasks() if t.get_coro().__name__ == "_watch_bindings"]
        assert all(t.done() for t in watches)


async def test_an_api_server_gone_is_a_failed_request() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    async with aiohttp.ClientSession() as session:
        api = Api(f"http://127.0.0.1:{port}", session)
        with pytest.raises(BenchError, match=r"^DELETE /api/v1/namespaces/a: Cannot connect"):
            await api.ok("DELETE", "/api/v1/namespaces/a")


async def test_an_answer_that_is_not_json_is_a_refused_request() -> None:
    async for api in _api(_fake_apiserver(answer_text=True)):
        with pytest.raises(BenchError, match=r"HTTP 503: apiserver is shutting down$"):
            await api.ok("GET", "/api/v1/namespaces/a/serviceaccounts/default")


@pytest.mark.parametrize(
    ("patching_scrapes", "timeout_s", "scrapes", "said"),
    [
        # node patches at scrapes 1, 2, 3 (10 each): 10->20 written, then 30->30: settled
        (3, 10.0, 4, None),
        # patches at every scrape: 10 written per interval until the timeout
        (10**9, 0.05, None, "wrote 10 nodes"),
    ],
    ids=["patches-stop", "patches-go-on"],
)
async def test_settling_waits_until_no_node_is_written(
    patching_scrapes: int, timeout_s: float, scrapes: int | None, said: str | None
) -> None:
    # The TTL controller's node patches: little CPU, so the CPU alone looks settled.
    count = 0

    async def metrics(request: web.Request) -> web.Response:
        nonlocal count
        count += 1
        patches = 10 * min(count, patching_scrapes)
        sample = 'apiserver_request_total{resource="nodes",subresource="",verb="PATCH"}'
        return web.Response(text=f"{sample} {patches}\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    messages: list[str] = []
    async for api in _api(app):
        control_plane = SimpleNamespace(_components={})
        await _settle(control_plane, api, messages.append, timeout_s=timeout_s, interval_s=0.01)
    if scrapes is not None:
        assert count == scrapes
    if said is None:
        assert messages == []
    else:
        (message,) = messages
        assert said in message
