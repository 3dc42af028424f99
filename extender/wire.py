"""The extender protocol on the wire, as kube-scheduler v1.34+ speaks it.

Field names and shapes follow ``k8s.io/kube-scheduler/extender/v1/types.go``:
top-level keys are Go field names (PascalCase, never omitted, ``null`` for nil);
the nested Pod and Node are ordinary Kubernetes objects in camelCase.  Only the
fields placement needs are declared; everything else (``managedFields``, status
conditions, unknown fields of newer API versions) is ignored.  Every field may be
``null`` wherever Go may send nil.

Responses are plain dicts built by the service (``NodeNames`` etc.); the models
here document and test their shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import orjson
from numpy.typing import NDArray
from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, GetCoreSchemaHandler
from pydantic.alias_generators import to_camel
from pydantic_core import core_schema

from scoring.names import EncodedNames

Quantity = str | int | float


class KubeModel(BaseModel):
    """A Kubernetes object part: camelCase keys, unknown keys ignored."""

    model_config = ConfigDict(
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )


class ObjectMeta(KubeModel):
    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None


class ResourceRequirements(KubeModel):
    requests: dict[str, Quantity | None] | None = None
    limits: dict[str, Quantity | None] | None = None


class Container(KubeModel):
    name: str | None = None
    resources: ResourceRequirements | None = None
    restart_policy: str | None = None


class SchedulingGate(KubeModel):
    name: str | None = None


class PodSpec(KubeModel):
    containers: list[Container | None] | None = None
    init_containers: list[Container | None] | None = None
    overhead: dict[str, Quantity | None] | None = None
    resources: ResourceRequirements | None = None
    """Pod-level resources (``PodLevelResources``): CPU and memory for the whole pod."""
    node_name: str | None = None
    node_selector: dict[str, str] | None = None
    priority: int | None = None
    priority_class_name: str | None = None
    scheduler_name: str | None = None
    scheduling_gates: list[SchedulingGate | None] | None = None
    """While any is left, kube-scheduler does not try the pod (``PodSchedulingReadiness``)."""


class PodStatus(KubeModel):
    phase: str | None = None
    start_time: str | None = None


class Pod(KubeModel):
    metadata: ObjectMeta | None = None
    spec: PodSpec | None = None
    status: PodStatus | None = None


class NodeStatus(KubeModel):
    capacity: dict[str, Quantity | None] | None = None
    allocatable: dict[str, Quantity | None] | None = None


class KubeNodeSpec(KubeModel):
    """A Node's ``spec``: what placement reads of it."""

    unschedulable: bool | None = None
    """Cordoned (``kubectl cordon``, a drain): kube-scheduler places no new pod there."""


class Node(KubeModel):
    metadata: ObjectMeta | None = None
    spec: KubeNodeSpec | None = None
    status: NodeStatus | None = None


class NodeList(KubeModel):
    items: list[Node | None] | None = None


class GoModel(BaseModel):
    """A top-level extender message: Go field names as keys."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class _ListOrEncoded:
    """Validates a list of str as such (and says so when it is not), keeps EncodedNames
    as they are, and dumps either as a list."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        names = handler.generate_schema(list[str])
        return core_schema.no_info_wrap_validator_function(
            lambda value, validate: value if isinstance(value, EncodedNames) else validate(value),
            names,
            serialization=core_schema.plain_serializer_function_ser_schema(
                list, return_schema=names
            ),
        )


NodeNames = Annotated[Sequence[str], _ListOrEncoded()]
"""A list of node names parsed from JSON, or (see ``extender.app.NodeNamesMemo``) the
names read where they lie in the body."""


class ExtenderArgs(GoModel):
    """Body of ``/filter`` and ``/prioritize``."""

    pod: Pod | None = Field(None, alias="Pod")
    nodes: NodeList | None = Field(None, alias="Nodes")
    node_names: NodeNames | None = Field(None, alias="NodeNames")


class ExtenderFilterResult(GoModel):
    nodes: NodeList | None = Field(None, alias="Nodes")
    node_names: list[str] | None = Field(None, alias="NodeNames")
    failed_nodes: dict[str, str] | None = Field(None, alias="FailedNodes")
    failed_and_unresolvable_nodes: dict[str, str] | None = Field(
        None, alias="FailedAndUnresolvableNodes"
    )
    error: str = Field("", alias="Error")


class HostPriority(GoModel):
    host: str = Field(alias="Host")
    score: int = Field(alias="Score")


class MetaPod(GoModel):
    uid: str = Field(alias="UID")


class MetaVictims(GoModel):
    pods: list[MetaPod | None] | None = Field(None, alias="Pods")
    num_pdb_violations: int = Field(0, alias="NumPDBViolations")


class Victims(GoModel):
    pods: list[Pod | None] | None = Field(None, alias="Pods")
    num_pdb_violations: int = Field(0, alias="NumPDBViolations")


class ExtenderPreemptionArgs(GoModel):
    pod: Pod | None = Field(None, alias="Pod")
    node_name_to_victims: dict[str, Victims | None] | None = Field(None, alias="NodeNameToVictims")
    node_name_to_meta_victims: dict[str, MetaVictims | None] | None = Field(
        None, alias="NodeNameToMetaVictims"
    )


class ExtenderPreemptionResult(GoModel):
    node_name_to_meta_victims: dict[str, MetaVictims] | None = Field(
        None, alias="NodeNameToMetaVictims"
    )


class ExtenderBindingArgs(GoModel):
    pod_name: str = Field(alias="PodName", min_length=1)
    pod_namespace: str = Field(alias="PodNamespace", min_length=1)
    pod_uid: str = Field(alias="PodUID")
    node: str = Field(alias="Node", min_length=1)


class ExtenderBindingResult(GoModel):
    error: str = Field("", alias="Error")


@dataclass(frozen=True)
class PreEncoded:
    """A response body already encoded as JSON (the app sends it as is)."""

    body: bytes


class HostPriorityEncoder:
    """Encodes a ``HostPriorityList`` without building a dict per host.

    Each node's ``{"Host":"...","Score":`` is encoded once per node set and kept
    in an array aligned with the view's rows; an answer is then one vectorised
    concatenation with the scores' bytes (about 4x faster than a dict per host
    through orjson at 5,000 hosts).
    """

    _SCORES = np.array([f"{score}}}".encode() for score in range(11)], dtype=object)

    def __init__(self) -> None:
        self._names: list[str] | None = None
        self._prefixes = np.zeros(0, dtype=object)

    @staticmethod
    def _prefix(name: str) -> bytes:
        return orjson.dumps({"Host": name})[:-1] + b',"Score":'

    def encode(
        self, node_names: list[str], rows: NDArray[np.int64], scores: NDArray[np.int64]
    ) -> PreEncoded:
        """Hosts ``node_names[rows]`` with ``scores`` (0..10), in that order.

        ``node_names`` is the view's row-to-name list; it is re-encoded only when
        the view hands out a different list (its node set changed).
        """
        if node_names is not self._names:
            self._names = node_names
            self._prefixes = np.array([self._prefix(name) for name in node_names], dtype=object)
        pieces = (self._prefixes[rows] + self._SCORES[scores]).tolist()
        return PreEncoded(b"[" + b",".join(pieces) + b"]")

    @classmethod
    def encode_names(cls, names: Sequence[str], scores: list[int]) -> PreEncoded:
        """The slow path, for lists with hosts the view does not know."""
        pieces = [
            cls._prefix(name) + cls._SCORES[score]
            for name, score in zip(names, scores, strict=True)
        ]
        return PreEncoded(b"[" + b",".join(pieces) + b"]")
