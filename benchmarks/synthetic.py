"""Synthetic fleets of current GPU nodes, and inference, batch and training workloads.

The Alibaba trace is dominated by fractional GPU sharing on older GPUs; the platforms
fairpack serves run whole GPUs on current hardware, with inference pods that need a
minimum of GPU memory.  This module generates clusters and workloads of that kind,
seeded (a ``numpy.random.Generator`` is passed in; nothing draws from global state).

Spec strings, as the command line takes them::

    --cluster synthetic:nodes=2000,mix=h100x8:0.3,a100x8:0.3,l40sx4:0.2,l4x1:0.2[,spot=0.5][,seed=0]
    --workload synthetic:llm-serving
    --workload synthetic:mixed,interactive=0.3

Node types
----------
Per-GPU memory is what GPU Feature Discovery labels (``nvidia.com/gpu.memory``, MiB, as
the driver reports it: a little under the marketing size, so a pod asking for
"24 GiB" does not fit a 24 GB L4).  CPU and memory are the node's allocatable: the
instance's vCPUs and RAM less the EKS AMI's kube-reserved CPU and 1565 MiB
(:func:`allocatable`).

=========  ============  ====  ======================  ==========  =====  =======  ====
type       instance      GPUs  product (GFD)           GPU MiB     vCPU   RAM GiB  spot
=========  ============  ====  ======================  ==========  =====  =======  ====
h100x8     p5.48xlarge      8  NVIDIA-H100-80GB-HBM3   81559       192    2048     0.1
a100x8     p4de.24xlarge    8  NVIDIA-A100-SXM4-80GB   81920       96     1152     0.2
a100-40x8  p4d.24xlarge     8  NVIDIA-A100-SXM4-40GB   40960       96     1152     0.3
l40sx8     g6e.48xlarge     8  NVIDIA-L40S             46068       192    1536     0.3
l40sx4     g6e.12xlarge     4  NVIDIA-L40S             46068       48     384      0.3
l4x4       g6.12xlarge      4  NVIDIA-L4               23034       48     192      0.4
l4x1       g6.2xlarge       1  NVIDIA-L4               23034       8      32       0.4
a10gx4     g5.12xlarge      4  NVIDIA-A10G             23028       48     192      0.5
a10gx1     g5.2xlarge       1  NVIDIA-A10G             23028       8      32       0.5
=========  ============  ====  ======================  ==========  =====  =======  ====

Node counts follow the mix exactly (largest remainder); each node is spot with the
type's share (or ``spot=``), drawn independently.  A node's pool is ``<type>-spot`` or
``<type>-od``; :func:`node_labels` gives the labels GFD and Karpenter would set.

Workloads
---------
Each workload is a table of pod shapes with weights (share of pods).  GiB are what
the pod needs per GPU (``min_gpu_memory_mib``), CPU in cores, memory in GiB.
FP8 shapes need compute capability 8.9+ (H100, L40S, L4), as ``allowed_models``;
``models=any`` drops every such requirement (what if those models ran on any GPU).

``llm-serving``: mostly one-GPU 7-13B models, some 70B replicas, a few 8-GPU MoE
models; interactive by default (``interactive=`` reweights the classes).

=================  ===========  ====  =======  ===  ====  ==========  ======
shape              class        GPUs  GPU GiB  CPU  GiB   models      weight
=================  ===========  ====  =======  ===  ====  ==========  ======
chat-7b            interactive     1       20    4    24  any           0.35
chat-13b           interactive     1       40    8    48  any           0.20
chat-8b-fp8        interactive     1       16    4    24  FP8           0.10
embed              interactive     1       12    2     8  any           0.08
chat-70b-tp2       interactive     2       70   16   192  any           0.10
chat-70b-tp4       interactive     4       40   24   256  any           0.07
moe-tp8            interactive     8       40   64   512  any           0.03
batch-7b           batch           1       20    4    24  any           0.07
=================  ===========  ====  =======  ===  ====  ==========  ======

``batch-inference``: offline jobs, many on one GPU, many on a whole 8-GPU node.

=================  ===========  ====  =======  ===  ====  ==========  ======
shape              class        GPUs  GPU GiB  CPU  GiB   models      weight
=================  ===========  ====  =======  ===  ====  ==========  ======
batch-7b           batch           1       20    4    24  any           0.40
batch-13b          batch           1       40    8    64  any           0.15
transcribe         batch           1       12    4    16  any           0.15
batch-34b-tp2      batch           2       40   16   128  any           0.05
batch-70b-tp4      batch           4       40   32   256  any           0.10
batch-70b-tp8      batch           8       40   64   512  any           0.15
=================  ===========  ====  =======  ===  ====  ==========  ======

``mixed``: interactive serving and batch work half and half by default
(``interactive=`` sets the interactive share), mostly small models (about 54% of
the GPU request fits a 24 GB GPU), with CPU-only preprocessing pods that land on GPU
nodes.

=================  ===========  ====  =======  ===  ====  ==========  ======
shape              class        GPUs  GPU GiB  CPU  GiB   models      weight
=================  ===========  ====  =======  ===  ====  ==========  ======
chat-7b            interactive     1       20    4    24  any           0.25
chat-13b           interactive     1       40    8    48  any           0.08
chat-8b-fp8        interactive     1       16    4    24  FP8           0.08
chat-70b-tp2       interactive     2       70   16   192  any           0.05
chat-70b-tp4       interactive     4       40   24   256  any           0.04
batch-7b           batch           1       20    4    24  any           0.20
batch-13b          batch           1       40    8    64  any           0.06
transcribe         batch           1       12    4    16  any           0.12
batch-70b-tp8      batch           8       40   64   512  any           0.02
preprocess         batch           0        0    4    16  -             0.10
=================  ===========  ====  =======  ===  ====  ==========  ======

``training``: fine-tuning and training jobs on whole 8-GPU nodes, with interactive
notebooks; the 4- and 8-GPU jobs (about 60% of the GPU request) need 80 GB GPUs.

=================  ===========  ====  =======  ===  ====  ==========  ======
shape              class        GPUs  GPU GiB  CPU  GiB   models      weight
=================  ===========  ====  =======  ===  ====  ==========  ======
notebook           interactive     1       16    4    32  any           0.15
eval-7b            batch           1       20    8    64  any           0.20
finetune-7b        batch           1       40   12   128  any           0.25
finetune-13b-ddp2  batch           2       40   24   256  any           0.15
finetune-70b-tp4   batch           4       70   44   512  any           0.15
train-tp8          batch           8       70   88  1024  any           0.10
=================  ===========  ====  =======  ===  ====  ==========  ======

Arrivals follow the FGD protocol's spirit: i.i.d. draws (so already shuffled), until
the GPU request reaches ``tune`` x capacity, nothing departs.  Unlike the trace's
tune-up, the pod that reaches the target is kept, so that ``tune = 1.0`` reaches
arrived = 100%.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from scoring import MILLI_PER_GPU, ON_DEMAND, SPOT, NodeSpec, PodClass, PodRequest

SYNTHETIC_PREFIX = "synthetic:"
MIB_PER_GIB = 1024
POPULARITY_SAMPLE_PODS = 20_000
"""Pods in the sample the FGD baseline counts its typical shapes over."""

_DRAW_BATCH = 4096
_KUBELET_MAX_PODS = 110


class SpecError(ValueError):
    """A synthetic cluster or workload spec that cannot be used; the message names the bad part."""


def allocatable(vcpus: int, memory_gib: int) -> tuple[int, int]:
    """(CPU milli, memory MiB) left to pods on an EKS node with ``vcpus`` and ``memory_gib``.

    kube-reserved CPU: 6% of the first core, 1% of the second, 0.5% of the next two,
    0.25% of the rest.  Memory: 255 MiB + 11 MiB per pod (110 pods) + 100 MiB for the
    hard eviction threshold.
    """
    second_core = min(max(vcpus - 1, 0), 1)
    third_and_fourth = min(max(vcpus - 2, 0), 2)
    beyond_four = max(vcpus - 4, 0)
    reserved_cpu_milli = (
        60 + 10 * second_core + 5 * third_and_fourth + math.floor(2.5 * beyond_four)
    )
    reserved_mib = 255 + 11 * _KUBELET_MAX_PODS + 100
    return vcpus * 1000 - reserved_cpu_milli, memory_gib * MIB_PER_GIB - reserved_mib


@dataclass(frozen=True)
class NodeType:
    """A kind of GPU node: the instance, its GPUs as GFD labels them, and its spot share."""

    name: str
    instance_type: str
    gpu_count: int
    gpu_product: str
    gpu_family: str
    compute_capability: str
    gpu_memory_mib: int
    vcpus: int
    memory_gib: int
    spot_share: float

    def spec(self, name: str, capacity_type: int) -> NodeSpec:
        cpu_milli, memory_mib = allocatable(self.vcpus, self.memory_gib)
        return NodeSpec(
            name=name,
            cpu_milli=cpu_milli,
            memory_mib=memory_mib,
            gpu_count=self.gpu_count,
            gpu_model=self.gpu_product,
            gpu_memory_mib=self.gpu_memory_mib,
            capacity_type=capacity_type,
            pool=f"{self.name}-{'spot' if capacity_type == SPOT else 'od'}",
        )


H100 = "NVIDIA-H100-80GB-HBM3"
A100_80 = "NVIDIA-A100-SXM4-80GB"
A100_40 = "NVIDIA-A100-SXM4-40GB"
L40S = "NVIDIA-L40S"
L4 = "NVIDIA-L4"
A10G = "NVIDIA-A10G"
FP8_PRODUCTS = (H100, L40S, L4)
"""GPUs with FP8 tensor cores (compute capability 8.9 and up)."""

NODE_TYPES: dict[str, NodeType] = {
    t.name: t
    for t in (
        NodeType("h100x8", "p5.48xlarge", 8, H100, "hopper", "9.0", 81559, 192, 2048, 0.1),
        NodeType("a100x8", "p4de.24xlarge", 8, A100_80, "ampere", "8.0", 81920, 96, 1152, 0.2),
        NodeType("a100-40x8", "p4d.24xlarge", 8, A100_40, "ampere", "8.0", 40960, 96, 1152, 0.3),
        NodeType("l40sx8", "g6e.48xlarge", 8, L40S, "ada-lovelace", "8.9", 46068, 192, 1536, 0.3),
        NodeType("l40sx4", "g6e.12xlarge", 4, L40S, "ada-lovelace", "8.9", 46068, 48, 384, 0.3),
        NodeType("l4x4", "g6.12xlarge", 4, L4, "ada-lovelace", "8.9", 23034, 48, 192, 0.4),
        NodeType("l4x1", "g6.2xlarge", 1, L4, "ada-lovelace", "8.9", 23034, 8, 32, 0.4),
        NodeType("a10gx4", "g5.12xlarge", 4, A10G, "ampere", "8.6", 23028, 48, 192, 0.5),
        NodeType("a10gx1", "g5.2xlarge", 1, A10G, "ampere", "8.6", 23028, 8, 32, 0.5),
    )
}


def node_labels(node_type: NodeType, capacity_type: int) -> dict[str, str]:
    """The labels GPU Feature Discovery, the cloud and Karpenter put on such a node."""
    major, minor = node_type.compute_capability.split(".")
    return {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": node_type.gpu_product,
        "nvidia.com/gpu.memory": str(node_type.gpu_memory_mib),
        "nvidia.com/gpu.count": str(node_type.gpu_count),
        "nvidia.com/gpu.family": node_type.gpu_family,
        "nvidia.com/gpu.compute.major": major,
        "nvidia.com/gpu.compute.minor": minor,
        "node.kubernetes.io/instance-type": node_type.instance_type,
        "karpenter.sh/capacity-type": "spot" if capacity_type == SPOT else "on-demand",
    }


# --- Fleets ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetSpec:
    """A parsed ``synthetic:`` cluster spec; ``mix`` weights are normalised to sum to 1."""

    nodes: int
    mix: tuple[tuple[str, float], ...]
    spot_share: float | None = None
    seed: int = 0

    def __str__(self) -> str:
        mix = ",".join(f"{name}:{weight:g}" for name, weight in self.mix)
        text = f"{SYNTHETIC_PREFIX}nodes={self.nodes},mix={mix}"
        if self.spot_share is not None:
            text += f",spot={self.spot_share:g}"
        return text + (f",seed={self.seed}" if self.seed else "")


def is_synthetic(text: str) -> bool:
    return text.startswith(SYNTHETIC_PREFIX)


def _known_types() -> str:
    return ", ".join(NODE_TYPES)


def _number(text: str, what: str, part: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise SpecError(f"{part!r}: {what} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise SpecError(f"{part!r}: {what} must be finite")
    return value


def _share(text: str, what: str, part: str) -> float:
    value = _number(text, what, part, float)
    if not 0 <= value <= 1:
        raise SpecError(f"{part!r}: {what} must be between 0 and 1, got {value:g}")
    return value


def parse_fleet_spec(text: str) -> FleetSpec:
    """``synthetic:nodes=N,mix=TYPE:WEIGHT,TYPE:WEIGHT,...[,spot=S][,seed=K]``.

    Parts after ``mix=`` without ``=`` continue the mix; a type without a weight
    weighs 1.  Weights are relative (normalised).
    """
    if not is_synthetic(text):
        raise SpecError(f"{text!r}: a synthetic cluster spec starts with {SYNTHETIC_PREFIX!r}")
    nodes: int | None = None
    mix: dict[str, float] = {}
    spot: float | None = None
    seed = 0
    in_mix = False
    for part in text.removeprefix(SYNTHETIC_PREFIX).split(","):
        part = part.strip()
        if not part:
            raise SpecError(f"{text!r}: empty part (two commas in a row?)")
        key, has_value, value = part.partition("=")
        if not has_value:
            if not in_mix:
                raise SpecError(f"{part!r}: expected key=value (nodes=, mix=, spot=, seed=)")
            entry = part
        elif key == "mix":
            in_mix, entry = True, value
        else:
            in_mix, entry = False, ""
            if key == "nodes":
                nodes = int(_number(value, "nodes", part, int))
                if nodes < 1:
                    raise SpecError(f"{part!r}: nodes must be at least 1")
            elif key == "spot":
                spot = _share(value, "spot", part)
            elif key == "seed":
                seed = int(_number(value, "seed", part, int))
            else:
                raise SpecError(f"{part!r}: unknown key {key!r} (known: nodes, mix, spot, seed)")
            continue
        name, has_weight, weight_text = entry.partition(":")
        name = name.strip()
        if name not in NODE_TYPES:
            raise SpecError(f"{part!r}: unknown node type {name!r} (known: {_known_types()})")
        if name in mix:
            raise SpecError(f"{part!r}: node type {name!r} appears twice in the mix")
        weight = _number(weight_text, f"the weight of {name}", part, float) if has_weight else 1.0
        if weight < 0:
            raise SpecError(f"{part!r}: the weight of {name} must be >= 0")
        mix[name] = weight
    if nodes is None:
        raise SpecError(f"{text!r}: missing nodes=N")
    if not mix:
        raise SpecError(f"{text!r}: missing mix=TYPE:WEIGHT,... (node types: {_known_types()})")
    total = sum(mix.values())
    if total <= 0:
        raise SpecError(f"{text!r}: the mix weights sum to 0")
    normalised = tuple((name, weight / total) for name, weight in mix.items() if weight > 0)
    return FleetSpec(nodes=nodes, mix=normalised, spot_share=spot, seed=seed)


def node_type_counts(nodes: int, mix: Sequence[tuple[str, float]]) -> dict[str, int]:
    """Nodes per type, proportional to the mix, summing to ``nodes`` (largest remainder)."""
    quotas = [(name, nodes * weight) for name, weight in mix]
    counts = {name: math.floor(quota) for name, quota in quotas}
    left = nodes - sum(counts.values())
    # Largest fractional part first; the mix order breaks ties.
    by_remainder = sorted(
        range(len(quotas)), key=lambda i: quotas[i][1] - counts[quotas[i][0]], reverse=True
    )
    for i in by_remainder[:left]:
        counts[quotas[i][0]] += 1
    return counts


def make_fleet(spec: FleetSpec, rng: np.random.Generator) -> list[NodeSpec]:
    """The nodes of ``spec``: exact counts per type, spot drawn per node from ``rng``."""
    fleet: list[NodeSpec] = []
    for name, count in node_type_counts(spec.nodes, spec.mix).items():
        node_type = NODE_TYPES[name]
        share = node_type.spot_share if spec.spot_share is None else spec.spot_share
        spot = rng.random(count) < share
        fleet.extend(
            node_type.spec(f"{name}-{i:05d}", SPOT if is_spot else ON_DEMAND)
            for i, is_spot in enumerate(spot.tolist())
        )
    return fleet


def fleet_from_spec(text: str) -> list[NodeSpec]:
    """Parse and generate; the fleet's generator is seeded by the spec's ``seed=`` (0)."""
    spec = parse_fleet_spec(text)
    return make_fleet(spec, np.random.default_rng([spec.seed, 7]))


# --- Workloads ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodShape:
    """One kind of pod: what it needs per GPU, in units people use (GiB, cores)."""

    name: str
    pod_class: PodClass
    gpus: int
    gpu_memory_gib: int
    cpus: float
    memory_gib: int
    models: tuple[str, ...] = ()

    def request(self) -> PodRequest:
        return PodRequest(
            gpu_count=self.gpus,
            milli_per_gpu=MILLI_PER_GPU if self.gpus else 0,
            cpu_milli=round(self.cpus * 1000),
            memory_mib=self.memory_gib * MIB_PER_GIB,
            min_gpu_memory_mib=self.gpu_memory_gib * MIB_PER_GIB,
            allowed_models=frozenset(self.models),
            pod_class=self.pod_class,
        )


_I, _B = PodClass.INTERACTIVE, PodClass.BATCH
SHAPES: dict[str, PodShape] = {
    s.name: s
    for s in (
        PodShape("chat-7b", _I, 1, 20, 4, 24),
        PodShape("chat-13b", _I, 1, 40, 8, 48),
        PodShape("chat-8b-fp8", _I, 1, 16, 4, 24, FP8_PRODUCTS),
        PodShape("embed", _I, 1, 12, 2, 8),
        PodShape("chat-70b-tp2", _I, 2, 70, 16, 192),
        PodShape("chat-70b-tp4", _I, 4, 40, 24, 256),
        PodShape("moe-tp8", _I, 8, 40, 64, 512),
        PodShape("batch-7b", _B, 1, 20, 4, 24),
        PodShape("batch-13b", _B, 1, 40, 8, 64),
        PodShape("transcribe", _B, 1, 12, 4, 16),
        PodShape("batch-34b-tp2", _B, 2, 40, 16, 128),
        PodShape("batch-70b-tp4", _B, 4, 40, 32, 256),
        PodShape("batch-70b-tp8", _B, 8, 40, 64, 512),
        PodShape("preprocess", _B, 0, 0, 4, 16),
        PodShape("notebook", _I, 1, 16, 4, 32),
        PodShape("eval-7b", _B, 1, 20, 8, 64),
        PodShape("finetune-7b", _B, 1, 40, 12, 128),
        PodShape("finetune-13b-ddp2", _B, 2, 40, 24, 256),
        PodShape("finetune-70b-tp4", _B, 4, 70, 44, 512),
        PodShape("train-tp8", _B, 8, 70, 88, 1024),
    )
}

WORKLOADS: dict[str, dict[str, float]] = {
    "llm-serving": {
        "chat-7b": 0.35,
        "chat-13b": 0.20,
        "chat-8b-fp8": 0.10,
        "embed": 0.08,
        "chat-70b-tp2": 0.10,
        "chat-70b-tp4": 0.07,
        "moe-tp8": 0.03,
        "batch-7b": 0.07,
    },
    "batch-inference": {
        "batch-7b": 0.40,
        "batch-13b": 0.15,
        "transcribe": 0.15,
        "batch-34b-tp2": 0.05,
        "batch-70b-tp4": 0.10,
        "batch-70b-tp8": 0.15,
    },
    "mixed": {
        "chat-7b": 0.25,
        "chat-13b": 0.08,
        "chat-8b-fp8": 0.08,
        "chat-70b-tp2": 0.05,
        "chat-70b-tp4": 0.04,
        "batch-7b": 0.20,
        "batch-13b": 0.06,
        "transcribe": 0.12,
        "batch-70b-tp8": 0.02,
        "preprocess": 0.10,
    },
    "training": {
        "notebook": 0.15,
        "eval-7b": 0.20,
        "finetune-7b": 0.25,
        "finetune-13b-ddp2": 0.15,
        "finetune-70b-tp4": 0.15,
        "train-tp8": 0.10,
    },
}


@dataclass(frozen=True)
class WorkloadSpec:
    name: str
    interactive_share: float | None = None
    any_model: bool = False
    """``models=any``: no shape requires a GPU model."""

    def __str__(self) -> str:
        text = f"{SYNTHETIC_PREFIX}{self.name}"
        if self.interactive_share is not None:
            text += f",interactive={self.interactive_share:g}"
        if self.any_model:
            text += ",models=any"
        return text


def parse_workload_spec(text: str) -> WorkloadSpec:
    """``synthetic:NAME[,interactive=SHARE][,models=any]``."""
    if not is_synthetic(text):
        raise SpecError(f"{text!r}: a synthetic workload spec starts with {SYNTHETIC_PREFIX!r}")
    name, *options = (part.strip() for part in text.removeprefix(SYNTHETIC_PREFIX).split(","))
    if name not in WORKLOADS:
        raise SpecError(f"{name!r}: unknown workload (known: {', '.join(WORKLOADS)})")
    interactive: float | None = None
    any_model = False
    for part in options:
        key, has_value, value = part.partition("=")
        if key == "interactive" and has_value:
            interactive = _share(value, "interactive", part)
        elif key == "models" and value == "any":
            any_model = True
        else:
            raise SpecError(f"{part!r}: unknown option (known: interactive=SHARE, models=any)")
    spec = WorkloadSpec(name, interactive, any_model)
    _check_classes(spec)
    return spec


def _check_classes(spec: WorkloadSpec) -> None:
    share = spec.interactive_share
    if share is None:
        return
    classes = {SHAPES[shape].pod_class for shape in WORKLOADS[spec.name]}
    for pod_class, needed in ((_I, share > 0), (_B, share < 1)):
        if needed and pod_class not in classes:
            raise SpecError(
                f"'interactive={share:g}': workload {spec.name!r} has no {pod_class} shapes"
            )


def shape_weights(spec: WorkloadSpec) -> dict[str, float]:
    """The workload's shapes and their shares of pods, with ``interactive=`` applied."""
    weights = dict(WORKLOADS[spec.name])
    share = spec.interactive_share
    if share is not None:
        target = {_I: share, _B: 1.0 - share}
        current = {
            pod_class: sum(w for s, w in weights.items() if SHAPES[s].pod_class is pod_class)
            for pod_class in target
        }
        # _check_classes made sure a class with a positive target has shapes.
        weights = {
            s: w * target[SHAPES[s].pod_class] / current[SHAPES[s].pod_class]
            for s, w in weights.items()
            if current[SHAPES[s].pod_class] > 0
        }
    total = sum(weights.values())
    return {s: w / total for s, w in weights.items() if w > 0}


class SyntheticWorkload:
    """A distribution of pod shapes, which the simulator draws arrivals from.

    Satisfies ``benchmarks.simulator.WorkloadSource``.
    """

    def __init__(self, spec: WorkloadSpec) -> None:
        self.spec = spec
        weights = shape_weights(spec)
        self.shape_names = tuple(weights)
        self.requests = tuple(SHAPES[name].request() for name in self.shape_names)
        if spec.any_model:
            self.requests = tuple(replace(r, allowed_models=frozenset()) for r in self.requests)
        self.weights = np.array([weights[name] for name in self.shape_names])
        self._gpu_milli = np.array([r.gpu_milli for r in self.requests], dtype=np.int64)
        if not (self._gpu_milli > 0).any():
            raise SpecError(f"{spec}: no shape with GPUs left to draw")

    @classmethod
    def from_spec(cls, text: str) -> SyntheticWorkload:
        return cls(parse_workload_spec(text))

    def sample(self, count: int, rng: np.random.Generator) -> list[PodRequest]:
        """``count`` pods drawn independently by weight."""
        drawn = rng.choice(len(self.requests), size=count, p=self.weights)
        return [self.requests[i] for i in drawn.tolist()]

    def arrivals(
        self, capacity_milli: int, tune: float, rng: np.random.Generator
    ) -> list[PodRequest]:
        """Pods drawn until their GPU request reaches ``tune`` x ``capacity_milli``."""
        target = tune * capacity_milli
        indices: list[int] = []
        requested = 0
        while requested < target:
            batch = rng.choice(len(self.requests), size=_DRAW_BATCH, p=self.weights)
            running = requested + np.cumsum(self._gpu_milli[batch])
            reached = np.flatnonzero(running >= target)
            end = int(reached[0]) + 1 if len(reached) else len(batch)
            indices.extend(batch[:end].tolist())
            requested = int(running[end - 1])
        return [self.requests[i] for i in indices]

    def popularity_sample(self, seed: int) -> list[PodRequest]:
        """What FGD counts its typical shapes over: a large sample of the distribution."""
        return self.sample(POPULARITY_SAMPLE_PODS, np.random.default_rng([seed, 3]))

    def shapes(self) -> list[PodRequest]:
        return list(self.requests)

    def table(self) -> Mapping[str, float]:
        return dict(zip(self.shape_names, self.weights.tolist(), strict=True))
