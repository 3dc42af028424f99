"""The placement policy's configuration: which score terms, with which weights.

Validated once, here; the scorers trust it.  Errors name the field path
(``weights: unknown score term 'best_fitt' ...``) so a refused ConfigMap update says
exactly what to fix.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scoring.terms import TERMS

DEFAULT_WEIGHTS: dict[str, float] = {"fragmentation": 1.0, "memory_fit": 1.0}


class ShapeLearning(BaseModel):
    """How the fragmentation term learns the pod-shape mix from arrivals."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    half_life_pods: float = Field(
        2000.0, gt=0, description="Arrivals after which an observed shape counts half."
    )
    coverage: float = Field(
        0.95, gt=0, le=1, description="Keep the most popular shapes up to this share of arrivals."
    )
    gpu_coverage: float = Field(
        0.5,
        ge=0,
        le=1,
        description=(
            "Also keep the largest GPU consumers up to this share of the GPUs asked for: a"
            " rare 8-GPU shape can be a large part of the demand."
        ),
    )
    refresh_every_pods: int = Field(
        50, ge=1, description="Rebuild the shape table after this many arrivals."
    )
    cpu_stranding: bool = Field(
        True,
        description=(
            "Count as fragment the GPU shares that copies of a GPU-sharing shape could use but"
            " the node's free CPU cannot feed (off: FGD's measure, which asks only whether one"
            " copy fits; whole-GPU shapes always keep it)."
        ),
    )


class StarvationConfig(BaseModel):
    """When a large pod counts as starving, and how many nodes may be held for such pods."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    min_gpus: int = Field(8, ge=2, description="Pods asking at least this many GPUs are large.")
    wait_s: float = Field(
        600.0, ge=0, description="A large pod pending this long holds the node closest to fit it."
    )
    max_reserved_nodes: int = Field(
        4, ge=0, description="At most this many nodes are held at once (one per starving pod)."
    )


class FairnessConfig(BaseModel):
    """Teams' entitlements and the fair-share levers (see ``scoring.fairshare``).

    A team's weight is ``team_weights[team]``, else (with ``weights_from_quota``)
    the GPUs of its ResourceQuotas, else ``default_weight``.
    """

    # Infinite weights or values pass ">= 0" and ">0", then give NaN scores and shares.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    enabled: bool = Field(
        True, description="Hold over-share pods at filter and weigh shares in preemption."
    )
    team_weights: dict[str, float] = Field(default_factory=dict)
    weights_from_quota: bool = Field(
        True, description="Weigh a team by its ResourceQuota on requests.<gpu> when not configured."
    )
    default_weight: float = Field(1.0, gt=0)
    gpu_values: dict[str, float] = Field(
        default_factory=dict,
        description="Value of one GPU by model (1 when unlisted): an 80 GiB GPU-hour may count more.",
    )
    starvation: StarvationConfig = Field(default_factory=lambda: StarvationConfig())

    @field_validator("team_weights", "gpu_values")
    @classmethod
    def _positive(cls, values: dict[str, float]) -> dict[str, float]:
        for name, value in values.items():
            if not value > 0:
                raise ValueError(f"{name!r} must be > 0, got {value}")
        return values


class PolicyConfig(BaseModel):
    """Weights of the score terms (see ``scoring.terms``) and how shapes are learned."""

    # Infinite weights or values pass ">= 0" and ">0", then give NaN scores and shares.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    tie_tolerance: float = Field(
        0.02,
        ge=0,
        description=(
            "Nodes whose weighted score sums are within this of the best are equally good,"
            " and a stable node order (a hash of the name) picks among them. Differences"
            " this small are noise against a learned shape mix; a fixed order among near"
            " ties fills nodes in turn, like first-fit, and keeps whole nodes free."
        ),
    )
    shapes: ShapeLearning = Field(default_factory=lambda: ShapeLearning())
    fairness: FairnessConfig = Field(default_factory=lambda: FairnessConfig())

    @field_validator("weights")
    @classmethod
    def _known_terms_nonnegative(cls, weights: dict[str, float]) -> dict[str, float]:
        for name, weight in weights.items():
            if name not in TERMS:
                known = ", ".join(sorted(TERMS))
                raise ValueError(f"unknown score term {name!r} (known: {known})")
            if not weight >= 0:
                raise ValueError(f"weight of {name!r} must be >= 0, got {weight}")
        if sum(weights.values()) <= 0:
            raise ValueError("at least one score term needs a positive weight")
        return weights
