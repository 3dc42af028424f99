"""Admission webhooks: GPU workloads must carry their team and cost center, and GPU pods
can be routed to ``fairpack-scheduler``.

``POST /validate`` (ValidatingWebhookConfiguration): rejects a GPU pod, or a Deployment,
StatefulSet, ReplicaSet, DaemonSet, Job or CronJob whose pod template requests GPUs,
when a required label (``team`` and ``cost-center`` by default) is missing or empty.
The message names the missing labels and where to put them; kubectl shows it as
``admission webhook "..." denied the request: <message>``.

``POST /mutate`` (MutatingWebhookConfiguration, optional): sets
``spec.schedulerName: fairpack-scheduler`` on GPU pods headed for the default
scheduler, so that two schedulers never race for the same GPUs.

Decisions are pure functions over the AdmissionReview dict (:func:`validate`,
:func:`mutate`); the aiohttp handlers only read, decide and answer.  A body that is
not an AdmissionReview gets a 400 with a one-line reason; whatever else happens the
answer is a 200 AdmissionReview (an unexpected error denies on /validate and admits
unchanged on /mutate, as each webhook's failurePolicy would), never a 5xx.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from extender.errors import BadRequestError, ObjectError
from extender.quantity import parse_quantity

log = logging.getLogger(__name__)

ADMISSION_API_VERSION = "admission.k8s.io/v1"

DEFAULT_REQUIRED_LABELS = ("team", "cost-center")
DEFAULT_EXEMPT_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease", "fairpack-system")
DEFAULT_SCHEDULER_NAME = "fairpack-scheduler"
ROUTED_ANNOTATION = "fairpack.io/routed-from-scheduler"
"""Set on the pods /mutate routed, with the scheduler they were headed for."""

_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
"""Where each workload kind keeps the pod template its pods are made from."""


@dataclass(frozen=True)
class WebhookConfig:
    """What the webhooks enforce; from ``fairpack serve`` flags."""

    required_labels: tuple[str, ...] = DEFAULT_REQUIRED_LABELS
    exempt_namespaces: frozenset[str] = frozenset(DEFAULT_EXEMPT_NAMESPACES)
    gpu_resources: tuple[str, ...] = ("nvidia.com/gpu", "fairpack.io/gpu-milli")
    """Extended resources that make a pod a GPU pod (the policy's ``resources``)."""
    scheduler_name: str = DEFAULT_SCHEDULER_NAME
    route_from: frozenset[str] = frozenset({"", "default-scheduler"})
    """Scheduler names /mutate replaces; pods meant for any other scheduler are left alone."""


@dataclass(frozen=True)
class PodTemplate:
    """A pod spec inside an admitted object, and the labels its pods will carry."""

    labels_path: str
    labels: Mapping[str, Any]
    spec: Mapping[str, Any]


class AdmissionInputError(BadRequestError):
    """The body is not an AdmissionReview request (HTTP 400)."""


# -- reading the review --------------------------------------------------------------------------


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _dig(obj: Any, path: Sequence[str]) -> Any:
    for key in path:
        obj = _mapping(obj).get(key)
    return obj


def admission_request(review: Any) -> Mapping[str, Any]:
    """The ``request`` of an AdmissionReview v1; raises AdmissionInputError otherwise."""
    if not isinstance(review, Mapping):
        raise AdmissionInputError(
            f"body is a JSON {type(review).__name__}; expected an AdmissionReview"
        )
    kind, version = review.get("kind"), review.get("apiVersion")
    if kind != "AdmissionReview" or version != ADMISSION_API_VERSION:
        raise AdmissionInputError(
            f"expected kind AdmissionReview, apiVersion {ADMISSION_API_VERSION}; "
            f"got kind {kind!r}, apiVersion {version!r}"
        )
    request = review.get("request")
    if not isinstance(request, Mapping):
        raise AdmissionInputError("AdmissionReview.request is missing")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise AdmissionInputError("AdmissionReview.request.uid is missing")
    return request


def _object_kind(request: Mapping[str, Any]) -> str:
    kind = _dig(request, ("kind", "kind"))
    if not isinstance(kind, str) or not kind:
        kind = _mapping(request.get("object")).get("kind")
    return kind if isinstance(kind, str) else ""


def pod_templates(kind: str, obj: Any) -> list[PodTemplate]:
    """The pod specs an object of ``kind`` holds: the pod itself, or its pod template."""
    if kind == "Pod":
        return [
            PodTemplate(
                "metadata.labels",
                _mapping(_dig(obj, ("metadata", "labels"))),
                _mapping(_dig(obj, ("spec",))),
            )
        ]
    path = _TEMPLATE_PATHS.get(kind)
    if path is None:
        return []
    template = _dig(obj, path)
    if not isinstance(template, Mapping):
        return []
    return [
        PodTemplate(
            ".".join((*path, "metadata", "labels")),
            _mapping(_dig(template, ("metadata", "labels"))),
            _mapping(template.get("spec")),
        )
    ]


def _containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for field in ("containers", "initContainers"):
        items = spec.get(field)
        if isinstance(items, list):
            yield from (c for c in items if isinstance(c, Mapping))


def requests_gpus(spec: Mapping[str, Any], resources: Sequence[str]) -> bool:
    """Whether any container asks for a GPU resource (a request or a limit above zero).

    A value that is not a quantity counts as a request: the API server refuses such a
    pod anyway, and a webhook should not be the place where a GPU pod slips through.
    """
    for container in _containers(spec):
        amounts = _mapping(container.get("resources"))
        for section in ("requests", "limits"):
            values = _mapping(amounts.get(section))
            for name in resources:
                if name not in values:
                    continue
                try:
                    if parse_quantity(values[name]) > 0:
                        return True
                except ObjectError:
                    return True
    return False


def missing_labels(labels: Mapping[str, Any], required: Sequence[str]) -> list[str]:
    """The required labels that are absent or empty, in the order they are required."""
    return [key for key in required if not (isinstance(v := labels.get(key), str) and v.strip())]


def _name(obj: Any, request: Mapping[str, Any]) -> str:
    metadata = _mapping(_mapping(obj).get("metadata"))
    namespace = request.get("namespace") or metadata.get("namespace") or ""
    name = metadata.get("name") or request.get("name")
    if not name:
        generate = metadata.get("generateName")
        name = f"{generate}*" if generate else "(unnamed)"
    return f"{namespace}/{name}" if namespace else str(name)


def _violations(
    kind: str, obj: Any, request: Mapping[str, Any], config: WebhookConfig
) -> list[str]:
    problems = []
    for template in pod_templates(kind, obj):
        if not requests_gpus(template.spec, config.gpu_resources):
            continue
        missing = missing_labels(template.labels, config.required_labels)
        if not missing:
            continue
        what = "is" if kind == "Pod" else "has a pod template that is"
        problems.append(
            f"GPU {kind} {_name(obj, request)} {what} missing required label(s) "
            f"{', '.join(missing)}: set them in {template.labels_path} "
            f"(required on GPU workloads: {', '.join(config.required_labels)})"
        )
    return problems


# -- answers -------------------------------------------------------------------------------------


def admission_response(
    uid: str,
    allowed: bool,
    *,
    message: str | None = None,
    code: int | None = None,
    patch: list[dict[str, Any]] | None = None,
    warnings: Sequence[str] = (),
) -> dict[str, Any]:
    """An AdmissionReview v1 carrying the response to request ``uid``."""
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if message is not None or code is not None:
        status: dict[str, Any] = {}
        if code is not None:
            status["code"] = code
        if message is not None:
            status["message"] = message
        if not allowed:
            status["reason"] = "Forbidden" if code == 403 else "InternalError"
        response["status"] = status
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(patch)).decode("ascii")
    if warnings:
        response["warnings"] = list(warnings)
    return {"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "response": response}


def _exempt(request: Mapping[str, Any], config: WebhookConfig) -> bool:
    namespace = request.get("namespace")
    return isinstance(namespace, str) and namespace in config.exempt_namespaces


def validate(review: Any, config: WebhookConfig) -> dict[str, Any]:
    """The validating webhook's decision on one AdmissionReview."""
    request = admission_request(review)
    uid = request["uid"]
    operation = request.get("operation")
    if operation not in ("CREATE", "UPDATE") or _exempt(request, config):
        return admission_response(uid, True)
    obj = request.get("object")
    kind = _object_kind(request)
    if operation == "UPDATE" and _dig(obj, ("metadata", "deletionTimestamp")):
        # Finalizers being removed on the way out: never block a deletion.
        return admission_response(uid, True)
    problems = _violations(kind, obj, request, config)
    if not problems:
        return admission_response(uid, True)
    if operation == "UPDATE" and _violations(kind, request.get("oldObject"), request, config):
        # Already unlabelled before this update (created before the webhook, or while it
        # was off): let it be changed, so that it can be fixed, and say what is missing.
        return admission_response(uid, True, warnings=[f"fairpack: {p}" for p in problems])
    return admission_response(uid, False, message="; ".join(problems), code=403)


def _pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def mutate(review: Any, config: WebhookConfig) -> dict[str, Any]:
    """The mutating webhook's decision: route a GPU pod to ``config.scheduler_name``."""
    request = admission_request(review)
    uid = request["uid"]
    obj = request.get("object")
    if (
        request.get("operation") != "CREATE"
        or _object_kind(request) != "Pod"
        or _exempt(request, config)
        or not isinstance(obj, Mapping)
        or not isinstance(obj.get("spec"), Mapping)
    ):
        return admission_response(uid, True)
    spec = obj["spec"]
    if not requests_gpus(spec, config.gpu_resources):
        return admission_response(uid, True)
    current = spec.get("schedulerName") or ""
    if current == config.scheduler_name or current not in config.route_from:
        return admission_response(uid, True)
    patch: list[dict[str, Any]] = [
        {
            "op": "replace" if "schedulerName" in spec else "add",
            "path": "/spec/schedulerName",
            "value": config.scheduler_name,
        }
    ]
    metadata = obj.get("metadata")
    if not isinstance(_mapping(metadata).get("annotations"), Mapping):
        annotations = {ROUTED_ANNOTATION: current or "default-scheduler"}
        patch.append({"op": "add", "path": "/metadata/annotations", "value": annotations})
    else:
        patch.append(
            {
                "op": "add",
                "path": _pointer("metadata", "annotations", ROUTED_ANNOTATION),
                "value": current or "default-scheduler",
            }
        )
    if not isinstance(metadata, Mapping):
        patch.insert(0, {"op": "add", "path": "/metadata", "value": {}})
    return admission_response(uid, True, patch=patch)


# -- HTTP ----------------------------------------------------------------------------------------

Decide = Callable[[Any, WebhookConfig], dict[str, Any]]
ConfigSource = Callable[[], WebhookConfig]
Count = Callable[[str, str], None]


@dataclass(frozen=True)
class _Webhooks:
    config: ConfigSource
    count: Count


WEBHOOKS = web.AppKey("webhooks", _Webhooks)

_MAX_MESSAGE_CHARS = 300


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_MESSAGE_CHARS else line[: _MAX_MESSAGE_CHARS - 3] + "..."


def _uid_of(review: Any) -> str | None:
    uid = _dig(review, ("request", "uid"))
    return uid if isinstance(uid, str) and uid else None


def _result(answer: Mapping[str, Any]) -> str:
    response = _mapping(answer.get("response"))
    if not response.get("allowed"):
        return "denied"
    return "patched" if response.get("patch") else "allowed"


def _handler(name: str, decide: Decide) -> Callable[[web.Request], Any]:
    fail_closed = name == "validate"

    async def handle(request: web.Request) -> web.Response:
        webhooks = request.app[WEBHOOKS]
        count = webhooks.count
        try:
            body = await request.read()
            try:
                review = orjson.loads(body) if body else None
            except orjson.JSONDecodeError as exc:
                raise AdmissionInputError(f"body is not JSON: {exc}") from None
            if review is None:
                raise AdmissionInputError("empty body; expected an AdmissionReview")
            try:
                answer = decide(review, webhooks.config())
            except AdmissionInputError:
                raise
            except Exception:
                uid = _uid_of(review)
                if uid is None:
                    raise
                log.exception("%s: unexpected error on request %s", name, uid)
                count(name, "error")
                message = "fairpack: internal error in the admission webhook (see its log)"
                if fail_closed:
                    answer = admission_response(uid, False, message=message, code=500)
                else:
                    answer = admission_response(uid, True, warnings=[message])
                return web.Response(body=orjson.dumps(answer), content_type="application/json")
        except web.HTTPRequestEntityTooLarge:
            count(name, "bad_request")
            return web.json_response({"error": "body too large"}, status=413)
        except AdmissionInputError as exc:
            reason = _one_line(str(exc))
            log.info("%s: 400 %s", name, reason)
            count(name, "bad_request")
            return web.json_response({"error": reason}, status=400)
        except Exception as exc:  # the client went away mid-body, or a body we cannot read
            log.warning("%s: request could not be read: %s", name, exc)
            count(name, "bad_request")
            return web.json_response({"error": "request could not be read"}, status=400)
        count(name, _result(answer))
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    return handle


def add_routes(
    app: web.Application, config: ConfigSource, count: Count | None = None
) -> web.Application:
    """Serve ``POST /validate`` and ``POST /mutate`` on ``app``.

    ``config`` is called per request (the GPU resource names follow the live policy);
    ``count(webhook, result)`` is told every outcome (metrics).
    """
    app[WEBHOOKS] = _Webhooks(config, count or (lambda webhook, result: None))
    app.router.add_post("/validate", _handler("validate", validate))
    app.router.add_post("/mutate", _handler("mutate", mutate))
    return app


def with_resources(config: WebhookConfig, *resources: str) -> WebhookConfig:
    """``config`` with the GPU resource names of the policy in force."""
    if tuple(resources) == config.gpu_resources:
        return config
    return dataclasses.replace(config, gpu_resources=tuple(resources))
