"""Placement policies for the simulator, by the names the command line uses.

Each baseline is its own module; ``fairpack`` goes through ``scoring.evaluate``,
the very entry point the extender calls.  Modules are imported on first use.
"""

from __future__ import annotations

from importlib import import_module

from benchmarks.policies.base import Choice, Policy, PolicyContext

POLICIES: dict[str, str] = {
    "random": "benchmarks.policies.random:RandomPolicy",
    "dotprod": "benchmarks.policies.dotprod:DotProdPolicy",
    "clustering": "benchmarks.policies.clustering:ClusteringPolicy",
    "packing": "benchmarks.policies.packing:PackingPolicy",
    "bestfit": "benchmarks.policies.bestfit:BestFitPolicy",
    "fgd": "benchmarks.policies.fgd:FGDPolicy",
    "kube-least": "benchmarks.policies.kube:KubeLeastPolicy",
    "kube-most": "benchmarks.policies.kube:KubeMostPolicy",
    "fairpack": "benchmarks.policies.fairpack:FairpackPolicy",
}


class UnknownPolicyError(ValueError):
    pass


def make_policy(name: str, context: PolicyContext) -> Policy:
    """Build the named policy for one run; unknown names fail with the list of known ones."""
    try:
        target = POLICIES[name]
    except KeyError:
        known = ", ".join(POLICIES)
        raise UnknownPolicyError(f"unknown policy {name!r} (known: {known})") from None
    module_name, _, class_name = target.partition(":")
    policy_class = getattr(import_module(module_name), class_name)
    policy: Policy = policy_class(context)
    return policy


__all__ = ["POLICIES", "Choice", "Policy", "PolicyContext", "UnknownPolicyError", "make_policy"]
