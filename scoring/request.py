"""What one pod asks for, derived once per pod and shared by every scorer."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PodClass(StrEnum):
    INTERACTIVE = "interactive"
    BATCH = "batch"


@dataclass(frozen=True, slots=True)
class PodRequest:
    """A pod's resource request.

    ``milli_per_gpu`` is the share of each requested GPU: 1000 for whole GPUs, less
    for a GPU-sharing pod (which then asks for exactly one GPU).  ``allowed_models``
    empty means any GPU model will do.
    """

    gpu_count: int = 0
    milli_per_gpu: int = 0
    cpu_milli: int = 0
    memory_mib: int = 0
    min_gpu_memory_mib: int = 0
    allowed_models: frozenset[str] = frozenset()
    team: str = ""
    pod_class: PodClass = PodClass.BATCH
    priority: int = 0
    preemptible: bool = True

    def __post_init__(self) -> None:
        if self.gpu_count < 0 or self.cpu_milli < 0 or self.memory_mib < 0:
            raise ValueError(f"negative request: {self}")
        if self.gpu_count == 0 and self.milli_per_gpu != 0:
            raise ValueError("milli_per_gpu must be 0 when no GPU is requested")
        if self.gpu_count > 0 and not 0 < self.milli_per_gpu <= 1000:
            raise ValueError(f"milli_per_gpu must be in 1..1000, got {self.milli_per_gpu}")
        if self.milli_per_gpu < 1000 and self.gpu_count > 1:
            raise ValueError("a GPU-sharing request asks for exactly one GPU")

    @property
    def is_sharing(self) -> bool:
        """True for a fractional request (one GPU, less than 1000 milli)."""
        return self.gpu_count == 1 and self.milli_per_gpu < 1000

    @property
    def gpu_milli(self) -> int:
        """Total GPU milli requested."""
        return self.gpu_count * self.milli_per_gpu
