"""The FGD authors' published per-seed results (``allocation_by_arrived.csv``)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from benchmarks.traces import TraceError, read_text

PUBLISHED_NAMES = {
    "01-Random": "random",
    "02-DotProd": "dotprod",
    "03-GpuClustering": "clustering",
    "04-GpuPacking": "packing",
    "05-BestFit": "bestfit",
    "06-FGD": "fgd",
}


def load_reference(path: str | Path, workload: str) -> dict[str, dict[int, float]]:
    """Unallocated GPU % at arrived = 100% per policy (our names) and seed.

    ``workload`` is the pod list's stem (``openb_pod_list_default``); a workload the
    file does not cover gives an empty dict.
    """
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"{path}: no such reference file")
    published: dict[str, dict[int, float]] = {}
    with io.StringIO(read_text(path)) as handle:
        for line_no, row in enumerate(csv.DictReader(handle), start=2):
            if row.get("workload") != workload:
                continue
            name = PUBLISHED_NAMES.get(row.get("sc_policy", ""))
            if name is None:
                continue
            try:
                seed, allocated = int(row["seed"]), float(row["100"])
            except (KeyError, ValueError):
                raise TraceError(f"{path}:{line_no}: no seed or no number in column 100") from None
            published.setdefault(name, {})[seed] = round(100.0 - allocated, 2)
    return published
