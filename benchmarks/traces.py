"""Loaders for the Alibaba GPU trace 2023 ("openb") CSV files.

Node lists: ``sn,cpu_milli,memory_mib,gpu,model``.
Pod lists: ``name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,
creation_time,deletion_time,scheduled_time``; the ``multigpu`` variants carry only the
first five columns.  Every malformed row is reported with its file and line number,
all at once, so a bad file is fixed in one pass.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from scoring import NodeSpec, PodClass, PodRequest

BUILTIN_NODES = "builtin:openb_node_list_gpu_node.csv"
BUILTIN_PODS = "builtin:openb_pod_list_default.csv"

NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_COLUMNS_SHORT = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
POD_COLUMNS_FULL = (
    *POD_COLUMNS_SHORT,
    "gpu_spec",
    "qos",
    "pod_phase",
    "creation_time",
    "deletion_time",
    "scheduled_time",
)

_MAX_REPORTED = 20


class TraceError(ValueError):
    """A trace file that cannot be read; the message lists what to fix."""


@dataclass(frozen=True)
class TracePod:
    name: str
    request: PodRequest
    qos: str = ""
    creation_s: int | None = None
    deletion_s: int | None = None


def _open(source: str | Path) -> tuple[str, Iterator[str]]:
    text = str(source)
    if text.startswith("builtin:"):
        name = text.removeprefix("builtin:")
        resource = resources.files("benchmarks").joinpath("data", name)
        if not resource.is_file():
            raise TraceError(f"{text}: no such built-in trace file")
        return text, iter(resource.read_text(encoding="utf-8-sig").splitlines())
    path = Path(text)
    if not path.is_file():
        raise TraceError(f"{path}: no such file (give a path to an openb CSV)")
    return str(path), iter(read_text(path).splitlines())


def read_text(path: Path) -> str:
    """The text of a CSV the user named; what is wrong with it, as a TraceError."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TraceError(
            f"{path}: not UTF-8 text (byte {exc.start}); is it the CSV, uncompressed?"
        ) from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _rows(
    source: str | Path, accepted_headers: tuple[tuple[str, ...], ...]
) -> Iterator[tuple[int, dict[str, str]]]:
    label, lines = _open(source)
    reader = csv.reader(lines)
    header = tuple(next(reader, ()))
    if header not in accepted_headers:
        expected = " or ".join(",".join(h) for h in accepted_headers)
        raise TraceError(f"{label}:1: header {','.join(header)!r}, expected {expected}")
    for line_no, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(header):
            yield line_no, {"__error__": f"{len(row)} fields, expected {len(header)}"}
            continue
        yield line_no, dict(zip(header, row, strict=True))


def _parse_all(
    source: str | Path,
    headers: tuple[tuple[str, ...], ...],
    parse: Callable[[dict[str, str]], object],
) -> list[object]:
    parsed: list[object] = []
    errors: list[str] = []
    label = str(source)
    for line_no, row in _rows(source, headers):
        try:
            if "__error__" in row:
                raise ValueError(row["__error__"])
            parsed.append(parse(row))
        except (ValueError, KeyError) as exc:
            errors.append(f"{label}:{line_no}: {exc}")
    if errors:
        more = (
            f"\n... and {len(errors) - _MAX_REPORTED} more" if len(errors) > _MAX_REPORTED else ""
        )
        raise TraceError("malformed rows:\n" + "\n".join(errors[:_MAX_REPORTED]) + more)
    if not parsed:
        raise TraceError(f"{label}: no data rows")
    return parsed


def _int(row: dict[str, str], column: str, *, minimum: int = 0) -> int:
    text = row[column].strip()
    try:
        value = int(text)
    except ValueError:
        try:
            as_float = float(text)
        except ValueError:
            raise ValueError(f"{column}={text!r} is not a number") from None
        if not as_float.is_integer():
            raise ValueError(f"{column}={text!r} is not a whole number") from None
        value = int(as_float)
    if value < minimum:
        raise ValueError(f"{column}={value} is below {minimum}")
    return value


def _node(row: dict[str, str]) -> NodeSpec:
    if not row["sn"].strip():
        raise ValueError("sn (the node's name) is empty")
    gpus = _int(row, "gpu")
    model = row["model"].strip()
    if gpus and not model:
        raise ValueError(f"node {row['sn']!r} has {gpus} GPUs but no model")
    return NodeSpec(
        name=row["sn"].strip(),
        cpu_milli=_int(row, "cpu_milli"),
        memory_mib=_int(row, "memory_mib"),
        gpu_count=gpus,
        gpu_model=model if gpus else "",
    )


def _pod(row: dict[str, str]) -> TracePod:
    gpus = _int(row, "num_gpu")
    milli = _int(row, "gpu_milli")
    if gpus == 0:
        milli = 0
    elif not 0 < milli <= 1000:
        raise ValueError(f"gpu_milli={milli} with num_gpu={gpus}; expected 1..1000")
    elif gpus > 1 and milli != 1000:
        raise ValueError(f"num_gpu={gpus} with gpu_milli={milli}; multi-GPU pods take whole GPUs")
    spec = row.get("gpu_spec", "").strip()
    qos = row.get("qos", "").strip()
    request = PodRequest(
        gpu_count=gpus,
        milli_per_gpu=milli,
        cpu_milli=_int(row, "cpu_milli"),
        memory_mib=_int(row, "memory_mib"),
        allowed_models=frozenset(m for m in spec.split("|") if m),
        pod_class=PodClass.INTERACTIVE if qos == "LS" else PodClass.BATCH,
    )
    creation = row.get("creation_time", "").strip()
    deletion = row.get("deletion_time", "").strip()
    return TracePod(
        name=row["name"].strip(),
        request=request,
        qos=qos,
        creation_s=_int(row, "creation_time") if creation else None,
        deletion_s=_int(row, "deletion_time") if deletion else None,
    )


def load_nodes(source: str | Path = BUILTIN_NODES) -> list[NodeSpec]:
    """Nodes of an openb node list (a path, or ``builtin:<file>``)."""
    nodes = [n for n in _parse_all(source, (NODE_COLUMNS,), _node) if isinstance(n, NodeSpec)]
    repeated = [name for name, count in Counter(n.name for n in nodes).items() if count > 1]
    if repeated:
        names = ", ".join(repeated[:_MAX_REPORTED])
        raise TraceError(f"{source}: node names (sn) appear more than once: {names}")
    return nodes


def load_pods(source: str | Path = BUILTIN_PODS) -> list[TracePod]:
    """Pods of an openb pod list, in file order."""
    pods = _parse_all(source, (POD_COLUMNS_FULL, POD_COLUMNS_SHORT), _pod)
    return [p for p in pods if isinstance(p, TracePod)]
