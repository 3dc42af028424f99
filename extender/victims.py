"""The extender's view of victim selection: the rules live in ``scoring.victims``.

Kept so that the service and its tests read victims from one place; the simulator
calls ``scoring.victims`` directly, and so decides exactly as the service does.
"""

from __future__ import annotations

from scoring.victims import (
    VictimDecision,
    VictimRecord,
    best_nodes,
    node_cost,
    select_victims,
    victim_order_key,
)

__all__ = [
    "VictimDecision",
    "VictimRecord",
    "best_nodes",
    "node_cost",
    "select_victims",
    "victim_order_key",
]
