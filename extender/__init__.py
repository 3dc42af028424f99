"""fairpack's extender service: kube-scheduler's filter, prioritize, preempt and bind
over a live, exact view of the cluster's GPUs.

What users touch is re-exported here; the modules behind it are implementation.
"""

from extender.app import create_app
from extender.config import FairpackConfig, LiveConfig, parse_config
from extender.errors import BadRequestError, BindError, ConfigError, FairpackError, ObjectError
from extender.metrics import Metrics
from extender.service import Binder, Extender, ViewOnlyBinder
from extender.view import ClusterView, Deleted, Replaced, Upserted

__all__ = [
    "BadRequestError",
    "BindError",
    "Binder",
    "ClusterView",
    "ConfigError",
    "Deleted",
    "Extender",
    "FairpackConfig",
    "FairpackError",
    "LiveConfig",
    "Metrics",
    "ObjectError",
    "Replaced",
    "Upserted",
    "ViewOnlyBinder",
    "create_app",
    "parse_config",
]
