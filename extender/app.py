"""The HTTP face of the extender (aiohttp).

``POST /filter``, ``/prioritize``, ``/preempt``, ``/bind`` speak kube-scheduler's
extender protocol; ``GET /healthz``, ``/readyz``, ``/metrics``, ``/debug/state`` and
``/debug/explain?pod=NS/NAME`` are for people and probes; ``POST /validate`` and
``/mutate`` are the admission webhooks (``extender.webhook``).  A *public* app (the
listener that faces the network) has only health, metrics and the webhooks.

Whatever a request body holds, the answer is a 200 or a 4xx with a one-line
reason (and, for filter, the reason in ``Error`` too), never a traceback.  Each
verb's response carries a ``Server-Timing: app;dur=<ms>`` header, the server-side
time from parsing the body to the serialised answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError

from extender.config import describe_validation_error
from extender.errors import BadRequestError
from extender.service import Extender, resources_alone_place
from extender.webhook import WebhookConfig, with_resources
from extender.webhook import add_routes as add_webhook_routes
from extender.wire import (
    ExtenderArgs,
    ExtenderBindingArgs,
    ExtenderPreemptionArgs,
    PreEncoded,
)
from scoring.names import EncodedNames

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 2**20
"""Generous for 15,000 node names or a full NodeList of a few thousand nodes."""
BODY_TIMEOUT_S = 10.0
"""How long a verb's body may take to arrive: kube-scheduler sends it at once and gives
up after its httpTimeout (5 s by default); a client that sends less than its
Content-Length would otherwise hold the handler (and shutdown) for as long as it likes."""
_MAX_REASON_CHARS = 300

EXTENDER = web.AppKey("extender", Extender)
MAX_BODY = web.AppKey("max_body_bytes", int)
BODY_TIMEOUT = web.AppKey("body_timeout_s", float)

_ERROR_BODIES: dict[str, Callable[[str], Any]] = {
    "filter": lambda reason: {
        "Nodes": None,
        "NodeNames": None,
        "FailedNodes": None,
        "FailedAndUnresolvableNodes": None,
        "Error": reason,
    },
    "prioritize": lambda reason: {"Error": reason},
    "preempt": lambda reason: {"NodeNameToMetaVictims": None, "Error": reason},
    "bind": lambda reason: {"Error": reason},
}


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_REASON_CHARS else line[: _MAX_REASON_CHARS - 3] + "..."


def _load(body: bytes) -> dict[str, Any]:
    if not body:
        raise BadRequestError("empty body; expected a JSON object")
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"body is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise BadRequestError(f"body is a JSON {type(raw).__name__}; expected an object")
    return raw


M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], raw: dict[str, Any]) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise BadRequestError(describe_validation_error(exc)) from None


_NODE_NAMES_KEY = b',"NodeNames":'


class NodeNamesMemo:
    """Parse a filter or prioritize body with its node list apart.

    At 5,000 nodes the list is most of the body, and it comes last: Go encodes
    ExtenderArgs' fields in their order (Pod, Nodes, NodeNames), without spaces.  The
    list is parsed on its own and taken when it is a list of strings and nothing else
    (the model's own check, without building it item by item), and the rest of the body
    is validated without it.  A long list as Go writes it (names of plain ASCII) is not
    parsed at all: its names are read where they lie, and the view finds their rows
    without a string per name (:class:`scoring.names.EncodedNames`).  The bytes of the
    last list are remembered: the same list again is not parsed again.

    The split must not change what a body says: the part from the key on must parse on
    its own as ``{"NodeNames": [str, ...]}`` (ending the body, it closes the outermost
    object: the key is a top-level one), and the part before it only when it parses,
    closed, as an object with other members and no list of its own (a duplicate key, or
    ``node_names``, which the model also reads).  Any other body is parsed whole.
    """

    def __init__(self) -> None:
        self._tail = b""
        self._names: Sequence[str] | None = None

    def load(self, body: bytes) -> tuple[ExtenderArgs, dict[str, Any]]:
        """The arguments, and the body as parsed (without the node list when apart)."""
        split = body.rfind(_NODE_NAMES_KEY)
        tail = body[split:] if split > 0 else b""
        names = (self._names if tail == self._tail else _node_names(tail)) if tail else None
        if names is not None:
            try:
                head = orjson.loads(body[:split] + b"}")
            except orjson.JSONDecodeError:
                head = None
            if isinstance(head, dict) and head and not head.keys() & _NODE_NAMES_FIELDS:
                args = _validate(ExtenderArgs, head)
                self._tail, self._names = tail, names
                return args.model_copy(update={"node_names": names}), head
        raw = _load(body)
        return _validate(ExtenderArgs, raw), raw


def _node_names(tail: bytes) -> Sequence[str] | None:
    """The node names ``tail`` (from ``,"NodeNames":`` to the end of the body) carries
    when it parses on its own as ``{"NodeNames": [str, ...]}``; None otherwise."""
    in_place = _names_in_place(tail)
    return in_place if in_place is not None else _names_alone(tail)


def _names_in_place(tail: bytes) -> EncodedNames | None:
    """The names of a list as Go writes a long one, read where they lie in the body,
    without a string per name: ``["a","b",...]}`` to the end, each name printable
    ASCII without an escape (as every node name is).  None for anything else, or for
    a short list (parsed faster as JSON)."""
    opening = len(_NODE_NAMES_KEY)
    if (
        len(tail) < max(_IN_PLACE_FROM_BYTES, opening + len(b'[""]}'))  # quotes not shared
        or tail[opening : opening + 2] != b'["'
        or not tail.endswith(b'"]}')
        or b"\\" in tail
    ):
        return None
    text = tail[opening + 2 : -3]  # a","b","c
    chars = np.frombuffer(text, dtype=np.uint8)
    if chars.min(initial=_PRINTABLE[0]) < _PRINTABLE[0] or chars.max(initial=0) > _PRINTABLE[1]:
        return None
    # No quote is escaped: each is an end of a name or a start, in pairs around a comma.
    quotes = np.flatnonzero(chars == ord('"'))
    ends, opens = quotes[0::2], quotes[1::2]
    if len(ends) != len(opens) or not (
        (opens - ends == 2).all() and (chars[ends + 1] == ord(",")).all()
    ):
        return None
    starts = np.concatenate(([0], opens + 1))
    lengths = np.append(ends, len(text)) - starts
    return EncodedNames(text, _SEPARATOR, starts, lengths)


_IN_PLACE_FROM_BYTES = 16_384
"""About 1,000 node names: a shorter list is parsed as JSON as fast."""
_PRINTABLE = (0x20, 0x7E)
_SEPARATOR = b'","'


def _names_alone(tail: bytes) -> list[str] | None:
    """The node names ``tail`` (from ``,"NodeNames":`` to the end of the body) carries
    when it parses on its own as ``{"NodeNames": [str, ...]}``; None otherwise."""
    try:
        alone = orjson.loads(b"{" + tail[1:])
    except orjson.JSONDecodeError:
        return None
    names = alone.get("NodeNames") if isinstance(alone, dict) and len(alone) == 1 else None
    if not isinstance(names, list) or not names:
        return None
    try:
        "".join(names)  # every item a string (the model's check), in one C pass
    except TypeError:
        return None
    return names


_NODE_NAMES_FIELDS = frozenset({"NodeNames", "node_names"})


Handler = Callable[[Extender, bytes], Awaitable[Any]]


def _filter_with(memo: NodeNamesMemo) -> Handler:
    async def _filter(extender: Extender, body: bytes) -> Any:
        args, raw = memo.load(body)
        raw_nodes = (raw.get("Nodes") or {}).get("items") if args.node_names is None else None
        return extender.filter(args, raw_nodes)

    return _filter


def _prioritize_with(memo: NodeNamesMemo) -> Handler:
    async def _prioritize(extender: Extender, body: bytes) -> Any:
        return extender.prioritize(memo.load(body)[0])

    return _prioritize


async def _preempt(extender: Extender, body: bytes) -> Any:
    raw = _load(body)
    args = _validate(ExtenderPreemptionArgs, raw)
    return extender.preempt(args, own_victims=resources_alone_place(raw.get("Pod")))


async def _bind(extender: Extender, body: bytes) -> Any:
    return await extender.bind(_validate(ExtenderBindingArgs, _load(body)))


def _verb(name: str, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        extender = request.app[EXTENDER]
        try:
            async with asyncio.timeout(request.app[BODY_TIMEOUT]):
                body = await request.read()
        except TimeoutError:
            reason = f"body not received within {request.app[BODY_TIMEOUT]:g} s"
            log.warning("%s: %s", name, reason)
            response = _respond(extender, name, 408, _ERROR_BODIES[name](reason), _now())
            response.force_close()  # else aiohttp keeps reading the rest of the body
            return response
        except web.HTTPRequestEntityTooLarge:
            reason = f"body too large (limit {request.app[MAX_BODY]} bytes)"
            log.warning("%s: %s", name, reason)
            return _respond(extender, name, 413, _ERROR_BODIES[name](reason), _now())
        except Exception as exc:  # the client went away mid-body
            log.warning("%s: body could not be read: %s", name, exc)
            return _respond(
                extender,
                name,
                400,
                _ERROR_BODIES[name]("body could not be read"),
                _now(),
            )
        response = await _answer(extender, name, handler, body)
        if extender.unsettled:
            # Send the answer, then do what the request left for later (explain's records,
            # rejection counts): kube-scheduler is busy with its own side meanwhile.
            try:
                await response.prepare(request)
                await response.write_eof()
            except ConnectionError as exc:  # the client went away: the view must still settle
                log.info("%s: the answer could not be sent: %s", name, exc)
            answered = time.perf_counter(), time.thread_time()
            extender.settle()
            metrics = extender.metrics
            metrics.after_answer_seconds.labels(name).observe(time.perf_counter() - answered[0])
            if name in _COMPUTE_VERBS:
                metrics.request_cpu_seconds.labels(name).inc(time.thread_time() - answered[1])
        return response

    return handle


async def _answer(extender: Extender, name: str, handler: Handler, body: bytes) -> web.Response:
    start = _now()
    try:
        result = await handler(extender, body)
        status = 200
    except BadRequestError as exc:
        reason = _one_line(str(exc))
        log.info("%s: 400 %s", name, reason)
        result, status = _ERROR_BODIES[name](reason), 400
    except Exception:
        log.exception("%s failed", name)
        result, status = _ERROR_BODIES[name]("internal error in fairpack (see its log)"), 500
    return _respond(extender, name, status, result, start)


_COMPUTE_VERBS = frozenset({"filter", "prioritize", "preempt"})
"""Verbs that never yield to the loop: their thread CPU time is theirs alone (a bind
waits for the API server while the loop serves others)."""


def _now() -> tuple[float, float]:
    """Wall clock and this thread's CPU clock (every request is served on the loop's)."""
    return time.perf_counter(), time.thread_time()


def _respond(
    extender: Extender, verb: str, status: int, result: Any, start: tuple[float, float]
) -> web.Response:
    body = result.body if isinstance(result, PreEncoded) else orjson.dumps(result)
    elapsed_s = time.perf_counter() - start[0]
    metrics = extender.metrics
    metrics.requests.labels(verb, str(status)).inc()
    metrics.request_seconds.labels(verb).observe(elapsed_s)
    if verb in _COMPUTE_VERBS:
        metrics.request_cpu_seconds.labels(verb).inc(time.thread_time() - start[1])
    return web.Response(
        body=body,
        status=status,
        content_type="application/json",
        headers={"Server-Timing": f"app;dur={elapsed_s * 1000:.3f}"},
    )


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    if request.app[EXTENDER].view.ready:
        return web.Response(text="ready\n")
    return web.Response(status=503, text="not ready: the first sync of the cluster is running\n")


async def _metrics(request: web.Request) -> web.Response:
    request.app[EXTENDER].settle()
    output = generate_latest(request.app[EXTENDER].metrics.registry)
    response = web.Response(body=output)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def _debug_state(request: web.Request) -> web.Response:
    return _json(request.app[EXTENDER].debug_state())


async def _debug_explain(request: web.Request) -> web.Response:
    pod = request.query.get("pod", "")
    if pod.count("/") != 1 or pod.startswith("/") or pod.endswith("/"):
        return _json({"error": "give the pod as ?pod=NAMESPACE/NAME"}, status=400)
    decision = request.app[EXTENDER].explain(pod)
    if decision is None:
        return _json({"error": f"no recent decision for pod {pod}"}, status=404)
    return _json(decision)


async def _floor(request: web.Request) -> web.Response:
    """The transport floor: read a body, answer ``respond_bytes`` bytes, do nothing else.

    With ``parse=1``, also the least any extender in Python does with a filter's body
    before it weighs a node: parse it whole (orjson) and find each of its NodeNames'
    rows (a dict lookup per name); what it finds is dropped."""
    body = await request.read()
    if request.query.get("parse") == "1":
        _parse_floor(request.app[EXTENDER], body)
    try:
        size = int(request.query.get("respond_bytes", "2"))
    except ValueError:
        size = 2
    size = max(2, min(size, request.app[MAX_BODY]))
    return web.Response(body=b"[" + b" " * (size - 2) + b"]", content_type="application/json")


def _parse_floor(extender: Extender, body: bytes) -> list[int | None]:
    """The row of each of the body's NodeNames (None where the view knows no such node;
    none at all for a body that is not a filter's: the floor answers all the same)."""
    try:
        names = orjson.loads(body).get("NodeNames")
    except (orjson.JSONDecodeError, AttributeError):
        return []
    if not isinstance(names, list):
        return []
    try:
        return list(map(extender.view.state.row_by_name.get, names))  # one C-level pass
    except TypeError:  # a name that is a list or a mapping
        return []


def _json(document: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
    )


class _MalformedRequests(logging.Filter):
    """aiohttp logs a request it cannot parse (a Content-Length that is no number, both
    Content-Length and Transfer-Encoding, HTTP/2 spoken to an HTTP/1.1 port) as an
    ERROR with a traceback; it answered 4xx and the fault is the client's: one line at
    WARNING says so."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.msg = f"{record.getMessage()}: {_one_line(str(error))} (answered {error.code})"
            record.args = None
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _quiet_malformed_requests() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _MalformedRequests) for f in server_log.filters):
        server_log.addFilter(_MalformedRequests())


def create_app(
    extender: Extender,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    body_timeout_s: float = BODY_TIMEOUT_S,
    floor_endpoint: bool = False,
    webhook: WebhookConfig | None = None,
    public: bool = False,
) -> web.Application:
    """The extender's aiohttp application over ``extender``.

    ``body_timeout_s`` bounds how long a verb's body may take to arrive (a 408 after).
    ``floor_endpoint`` adds ``POST /debug/floor`` for the latency benchmark.
    ``webhook`` adds the admission webhooks; ``public`` leaves out the extender verbs
    and the debug pages (for the listener the API server and Prometheus reach).
    """
    _quiet_malformed_requests()
    app = web.Application(client_max_size=max_body_bytes)
    app[EXTENDER] = extender
    app[MAX_BODY] = max_body_bytes
    app[BODY_TIMEOUT] = body_timeout_s
    if not public:
        app.router.add_post("/filter", _verb("filter", _filter_with(NodeNamesMemo())))
        app.router.add_post("/prioritize", _verb("prioritize", _prioritize_with(NodeNamesMemo())))
        app.router.add_post("/preempt", _verb("preempt", _preempt))
        app.router.add_post("/bind", _verb("bind", _bind))
        app.router.add_get("/debug/state", _debug_state)
        app.router.add_get("/debug/explain", _debug_explain)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    if webhook is not None:

        def webhook_config(base: WebhookConfig = webhook) -> WebhookConfig:
            names = extender.config.current.resources  # the GPU resources of the live policy
            return with_resources(base, names.gpu, names.gpu_milli)

        add_webhook_routes(app, webhook_config, extender.metrics.admission_reviewed)
    if floor_endpoint and not public:
        app.router.add_post("/debug/floor", _floor)
    return app
