"""fairpack's one config: score weights, label keys, resource names, class rules.

Loaded from the policy ConfigMap (key ``config.yaml``, YAML or JSON) and reloaded
live.  Validation happens here, once; an invalid update is refused with the field
path of every problem (``policy.weights: unknown score term 'best_fitt' ...``) and the
last good config stays in force.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from extender.errors import ConfigError
from scoring import PodClass, PolicyConfig

log = logging.getLogger(__name__)

CONFIG_KEYS = ("config.yaml", "config.yml", "config.json")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeLabels(_Frozen):
    """Where a node's GPU model, GPU memory, capacity type and pool come from (first label wins)."""

    gpu_model: tuple[str, ...] = ("nvidia.com/gpu.product", "accelerator")
    gpu_memory_mib: tuple[str, ...] = Field(
        ("nvidia.com/gpu.memory",),
        description="Labels holding per-GPU memory as a bare MiB count (GPU Feature Discovery).",
    )
    gpu_memory_quantity: tuple[str, ...] = Field(
        ("gpu-memory",), description='Labels holding per-GPU memory as a quantity ("80Gi").'
    )
    capacity_type: tuple[str, ...] = (
        "karpenter.sh/capacity-type",
        "cloud.google.com/gke-spot",
        "eks.amazonaws.com/capacityType",
    )
    spot_values: frozenset[str] = Field(
        frozenset({"spot", "true"}), description="Capacity-type values meaning spot (any case)."
    )
    pool: tuple[str, ...] = (
        "karpenter.sh/nodepool",
        "cloud.google.com/gke-nodepool",
        "eks.amazonaws.com/nodegroup",
    )

    @field_validator("spot_values")
    @classmethod
    def _lower(cls, values: frozenset[str]) -> frozenset[str]:
        return frozenset(value.lower() for value in values)


class ResourceNames(_Frozen):
    gpu: str = Field("nvidia.com/gpu", min_length=1, description="Whole GPUs.")
    gpu_milli: str = Field(
        "fairpack.io/gpu-milli",
        min_length=1,
        description="A share of one GPU in milli-GPU (1..999); declare it ignoredByScheduler.",
    )


class PodRules(_Frozen):
    """How a pod's team, class and GPU constraints are read."""

    team_label: str = Field("team", description="Namespace label naming the team.")
    cost_center_label: str = Field(
        "cost-center", description="Namespace label naming the cost center (chargeback metrics)."
    )
    class_label: str = "fairpack.io/class"
    priority_classes: dict[str, PodClass] = Field(
        default_factory=lambda: {
            "inference-critical": PodClass.INTERACTIVE,
            "batch-inference": PodClass.BATCH,
        }
    )
    default_class: PodClass = PodClass.BATCH
    preemptible_label: str = Field(
        "fairpack.io/preemptible", description='"false" keeps the pod from ever being a victim.'
    )
    gpu_models_annotation: str = Field(
        "fairpack.io/gpu-models", description='Allowed GPU models, "A100|H100".'
    )
    gpu_memory_annotation: str = Field(
        "fairpack.io/gpu-memory", description='Minimum memory per GPU, a quantity ("40Gi").'
    )


class FairpackConfig(_Frozen):
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    nodes: NodeLabels = Field(default_factory=NodeLabels)
    resources: ResourceNames = Field(default_factory=ResourceNames)
    pods: PodRules = Field(default_factory=PodRules)
    filter_passes: Literal["best", "feasible"] = Field(
        "best",
        description=(
            "best: filter passes only the node prioritize would rank 10, which kube-scheduler"
            " picks anyway at the shipped extender weight, so it can skip prioritize;"
            " feasible: every node the pod fits, for kube-scheduler to score."
        ),
    )
    assume_ttl_s: float = Field(
        600.0,
        gt=0,
        description=(
            "A pod filter passes one node alone is counted there at once (kube-scheduler binds"
            " it there, after its Permit and PreBind steps); if neither the watch nor a bind"
            " shows it bound within this many seconds, it is pending again. Keep it above"
            " kube-scheduler's longest wait before binding (volume binding: bindTimeoutSeconds,"
            " 600 s by default): a pod still waiting there must not lose its GPUs. A pod"
            " kube-scheduler gives up on is filtered again, which replaces the assumption."
        ),
    )


_UNION_MEMBERS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean"}
# pydantic's words for Python types and its own wrapping, in the words of the YAML or JSON
# the user wrote.
_PLAIN_MESSAGES = {
    "extra_forbidden": "unknown key",
    "tuple_type": "expected a list",
    "frozen_set_type": "expected a list",
    "model_type": "expected a mapping",
    "dict_type": "expected a mapping",
}
_MAX_PROBLEMS = 3


def _message(item: ErrorDetails) -> str:
    error = item.get("ctx", {}).get("error")
    if item["type"] == "value_error" and error is not None:  # without "Value error, "
        return str(error)
    return _PLAIN_MESSAGES.get(item["type"], item["msg"])


def describe_validation_error(error: ValidationError) -> str:
    """Every problem on one line, each led by its field path.

    The failed members of a union (``cpu.str``, ``cpu.int``, ...) become one
    problem: ``cpu: expected a string, an integer or a number``; a validator's
    ``ValueError`` reads as its own message, and pydantic's Python type names as what
    the YAML or JSON should hold (``expected a list``).
    """
    problems: dict[str, list[str]] = {}
    unions: dict[str, list[str]] = {}
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        if len(loc) > 1 and loc[-1] in _UNION_MEMBERS:
            unions.setdefault(".".join(loc[:-1]), []).append(_UNION_MEMBERS[loc[-1]])
            continue
        problems.setdefault(".".join(loc) or "(root)", []).append(_message(item))
    for path, expected in unions.items():
        choices = ", ".join(expected[:-1]) + (" or " if len(expected) > 1 else "") + expected[-1]
        problems.setdefault(path, []).append(f"expected {choices}")
    lines = [f"{path}: {'; '.join(messages)}" for path, messages in problems.items()]
    more = f" (and {len(lines) - _MAX_PROBLEMS} more)" if len(lines) > _MAX_PROBLEMS else ""
    return "; ".join(lines[:_MAX_PROBLEMS]) + more


def parse_config(data: Mapping[str, str] | None) -> FairpackConfig:
    """The config held by a ConfigMap's ``data`` (defaults when it holds nothing)."""
    data = data or {}
    key = next((key for key in CONFIG_KEYS if key in data), None)
    if key is None and data:  # a misnamed key would otherwise run the defaults silently
        found = ", ".join(sorted(data))
        raise ConfigError(
            f"no config.yaml, config.yml or config.json key (found {found}):"
            " put the policy under config.yaml"
        )
    if key is None:
        return FairpackConfig()
    try:
        document = yaml.safe_load(data[key]) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: not YAML or JSON ({exc.__class__.__name__})") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{key}: expected a mapping at the top level")
    try:
        return FairpackConfig.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


class LiveConfig:
    """The config in force, and the rule for replacing it: only by a valid one."""

    def __init__(
        self,
        initial: FairpackConfig | None = None,
        on_reload: Callable[[str], None] | None = None,
    ) -> None:
        self.current = initial or FairpackConfig()
        self._on_reload = on_reload or (lambda result: None)
        self._listeners: list[Callable[[FairpackConfig], None]] = []

    def subscribe(self, listener: Callable[[FairpackConfig], None]) -> None:
        self._listeners.append(listener)

    def update(self, data: Mapping[str, str] | None) -> bool:
        """Apply a ConfigMap's data; False (and the old config stays) when it is invalid."""
        try:
            config = parse_config(data)
        except ConfigError as exc:
            log.error("config update refused, keeping the last good config: %s", exc)
            self._on_reload("invalid")
            return False
        if config == self.current:
            self._on_reload("unchanged")
            return True
        self.current = config
        for listener in self._listeners:
            listener(config)
        log.info("config reloaded: weights %s", dict(config.policy.weights))
        self._on_reload("applied")
        return True
