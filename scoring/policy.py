"""The placement policy's configuration: which score terms, with which weights.

Validated once, here; the scorers trust it.  Errors name the field path
(``weights.best_fitt: unknown score term ...``) so a refused ConfigMap update says
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
    refresh_every_pods: int = Field(
        50, ge=1, description="Rebuild the shape table after this many arrivals."
    )


class PolicyConfig(BaseModel):
    """Weights of the score terms (see ``scoring.terms``) and how shapes are learned."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
