"""fairpack's placement brain: pure, vectorised functions over the cluster's arrays.

No I/O, no asyncio, no Kubernetes objects: the extender and the simulator feed it
plain arrays and get masks, reasons and scores back.
"""

from scoring.candidates import Candidates
from scoring.feasibility import Check, CheckKind, Feasibility, check_feasibility, fits_when_empty
from scoring.fragmentation import FragmentAggregates, ShapeTable, node_fragment
from scoring.gpus import choose_gpus
from scoring.placement import Evaluation, evaluate, extender_priorities
from scoring.policy import PolicyConfig, ShapeLearning
from scoring.request import PodClass, PodRequest
from scoring.shapes import OnlineFragments, ShapeLearner
from scoring.state import MILLI_PER_GPU, ON_DEMAND, SPOT, ClusterState, NodeSpec
from scoring.terms import TERMS

__all__ = [
    "MILLI_PER_GPU",
    "ON_DEMAND",
    "SPOT",
    "TERMS",
    "Candidates",
    "Check",
    "CheckKind",
    "ClusterState",
    "Evaluation",
    "Feasibility",
    "FragmentAggregates",
    "NodeSpec",
    "OnlineFragments",
    "PodClass",
    "PodRequest",
    "PolicyConfig",
    "ShapeLearner",
    "ShapeLearning",
    "ShapeTable",
    "check_feasibility",
    "choose_gpus",
    "evaluate",
    "extender_priorities",
    "fits_when_empty",
    "node_fragment",
]
