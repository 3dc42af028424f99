"""Trace loaders (benchmarks/traces.py) and the published reference (benchmarks/reference.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.reference import load_reference
from benchmarks.traces import (
    BUILTIN_NODES,
    BUILTIN_PODS,
    NODE_COLUMNS,
    POD_COLUMNS_FULL,
    POD_COLUMNS_SHORT,
    TraceError,
    TracePod,
    load_nodes,
    load_pods,
)
from scoring import NodeSpec, PodClass, PodRequest

FULL_HEADER = ",".join(POD_COLUMNS_FULL)
SHORT_HEADER = ",".join(POD_COLUMNS_SHORT)
NODE_HEADER = ",".join(NODE_COLUMNS)


def write(tmp_path: Path, *lines: str, name: str = "trace.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


# --- well-formed files ----------------------------------------------------------------------


def test_full_pod_format(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        FULL_HEADER,
        "p0,12000,16384,1,1000,,LS,Running,0,12537496,0",
        "p1,6000,12288,1,460,V100M16|V100M32,BE,Running,427061,12902960,427061",
        "p2,88000,327680,8,1000,G2,LS,Running,5,,",  # no deletion time
        "p3,4000,8192,0,0,,BE,Running,7,9,7",  # CPU-only
    )
    assert load_pods(path) == [
        TracePod(
            "p0",
            PodRequest(1, 1000, 12_000, 16_384, pod_class=PodClass.INTERACTIVE),
            "LS",
            0,
            12_537_496,
        ),
        TracePod(
            "p1",
            PodRequest(1, 460, 6_000, 12_288, allowed_models=frozenset({"V100M16", "V100M32"})),
            "BE",
            427_061,
            12_902_960,
        ),
        TracePod(
            "p2",
            PodRequest(
                8,
                1000,
                88_000,
                327_680,
                allowed_models=frozenset({"G2"}),
                pod_class=PodClass.INTERACTIVE,
            ),
            "LS",
            5,
            None,
        ),
        TracePod("p3", PodRequest(0, 0, 4_000, 8_192), "BE", 7, 9),
    ]


def test_short_multigpu_pod_format(tmp_path: Path) -> None:
    path = write(tmp_path, SHORT_HEADER, "m0,32000,65536,4,1000", "m1,8000,1024,1,250")
    assert load_pods(path) == [
        TracePod("m0", PodRequest(4, 1000, 32_000, 65_536)),
        TracePod("m1", PodRequest(1, 250, 8_000, 1_024)),
    ]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        # num_gpu 0: any gpu_milli in the file is ignored (the trace has such rows)
        ("p,1000,512,0,1000", PodRequest(0, 0, 1_000, 512)),
        # whole numbers written as floats are accepted
        ("p,1000.0,512,1,1e3", PodRequest(1, 1000, 1_000, 512)),
        # surrounding spaces are ignored
        ("p, 1000 , 512 , 1 , 500 ", PodRequest(1, 500, 1_000, 512)),
    ],
    ids=["cpu-only-ignores-milli", "float-spelling", "spaces"],
)
def test_pod_values(tmp_path: Path, row: str, expected: PodRequest) -> None:
    assert load_pods(write(tmp_path, SHORT_HEADER, row))[0].request == expected


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, SHORT_HEADER, "", "a,1,1,0,0", "", "b,2,2,0,0")
    assert [pod.name for pod in load_pods(path)] == ["a", "b"]


def test_nodes(tmp_path: Path) -> None:
    path = write(tmp_path, NODE_HEADER, "n0,64000,262144,2,P100", "n1,96000,786432,0,")
    assert load_nodes(path) == [
        NodeSpec("n0", 64_000, 262_144, 2, "P100"),
        NodeSpec("n1", 96_000, 786_432, 0, ""),
    ]


def test_builtin_files() -> None:
    nodes = load_nodes(BUILTIN_NODES)
    # the README's totals: 1213 nodes, 6212 GPUs, 107018 cores
    assert len(nodes) == 1_213
    assert sum(n.gpu_count for n in nodes) == 6_212
    assert sum(n.cpu_milli for n in nodes) == 107_018_000
    pods = load_pods(BUILTIN_PODS)
    assert len(pods) == 8_152
    assert pods[0].name == "openb-pod-0000"
    assert load_nodes() == nodes  # the defaults are the built-in files


# --- malformed files ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([SHORT_HEADER, "p,abc,512,1,500"], ":2: cpu_milli='abc' is not a number"),
        ([SHORT_HEADER, "p,1000,512,1,2.5"], ":2: gpu_milli='2.5' is not a whole number"),
        ([SHORT_HEADER, "p,1000,512,1"], ":2: 4 fields, expected 5"),
        ([FULL_HEADER, "p,1000,512,1,500"], ":2: 5 fields, expected 11"),
        (
            [SHORT_HEADER, "p,1000,512,1,1001"],
            ":2: gpu_milli=1001 with num_gpu=1; expected 1..1000",
        ),
        ([SHORT_HEADER, "p,1000,512,1,0"], ":2: gpu_milli=0 with num_gpu=1; expected 1..1000"),
        (
            [SHORT_HEADER, "p,1000,512,2,500"],
            ":2: num_gpu=2 with gpu_milli=500; multi-GPU pods take whole GPUs",
        ),
        ([SHORT_HEADER, "p,-1,512,0,0"], ":2: cpu_milli=-1 is below 0"),
        ([SHORT_HEADER, "p,nan,512,0,0"], ":2: cpu_milli='nan' is not a whole number"),
        # the line number counts the blank line and the header
        ([SHORT_HEADER, "a,1,1,0,0", "", "p,1,1,x,0"], ":4: num_gpu='x' is not a number"),
        (["name,cpu,memory,num_gpu,gpu_milli", "p,1,1,0,0"], ":1: header 'name,cpu,memory"),
        ([], ":1: header '', expected"),  # empty file
        ([SHORT_HEADER], ": no data rows"),
    ],
    ids=[
        "not-a-number",
        "fraction",
        "too-few-fields",
        "short-row-in-full-file",
        "milli-above-1000",
        "milli-zero",
        "multi-gpu-fraction",
        "negative",
        "nan",
        "line-numbers",
        "bad-header",
        "empty-file",
        "no-rows",
    ],
)
def test_malformed_pod_files(tmp_path: Path, lines: list[str], message: str) -> None:
    path = write(tmp_path, *lines)
    with pytest.raises(TraceError) as error:
        load_pods(path)
    assert f"{path}{message}" in str(error.value)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("n0,64000,262144,2,", ":2: node 'n0' has 2 GPUs but no model"),
        ("n0,64000,big,2,P100", ":2: memory_mib='big' is not a number"),
        ("n0,64000,262144,-2,P100", ":2: gpu=-2 is below 0"),
        (" ,64000,262144,2,P100", ":2: sn (the node's name) is empty"),
        (
            "n0,64000,262144,100000000,P100",
            ":2: node 'n0' has 100000000 GPUs; fairpack takes 0 to 1024 per node",
        ),
    ],
    ids=["gpus-without-model", "not-a-number", "negative-gpus", "no-name", "absurd-gpus"],
)
def test_malformed_node_files(tmp_path: Path, row: str, message: str) -> None:
    path = write(tmp_path, NODE_HEADER, row)
    with pytest.raises(TraceError) as error:
        load_nodes(path)
    assert f"{path}{message}" in str(error.value)


def test_a_node_name_twice_is_refused(tmp_path: Path) -> None:
    # The extender answers every filter over such a list with 400.
    path = write(tmp_path, NODE_HEADER, "n0,1,1,2,P100", "n1,1,1,2,P100", "n0,1,1,1,V100")
    with pytest.raises(TraceError, match=r"node names \(sn\) appear more than once: n0$"):
        load_nodes(path)


def test_a_file_that_is_not_text_says_so(tmp_path: Path) -> None:
    path = tmp_path / "nodes.csv.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00\xff")
    with pytest.raises(TraceError, match="not UTF-8 text"):
        load_nodes(path)
    with pytest.raises(TraceError, match="not UTF-8 text"):
        load_pods(path)
    with pytest.raises(TraceError, match="not UTF-8 text"):
        load_reference(path, "w")


def test_every_malformed_row_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, SHORT_HEADER, "a,x,1,0,0", "b,1,1,0,0", "c,1,1,9,500")
    with pytest.raises(TraceError) as error:
        load_pods(path)
    text = str(error.value)
    assert f"{path}:2: cpu_milli='x'" in text
    assert f"{path}:4: num_gpu=9 with gpu_milli=500" in text
    assert f"{path}:3" not in text


def test_a_long_list_of_errors_is_cut(tmp_path: Path) -> None:
    path = write(tmp_path, SHORT_HEADER, *(f"p{i},x,1,0,0" for i in range(25)))
    with pytest.raises(TraceError) as error:
        load_pods(path)
    text = str(error.value)
    assert f"{path}:21:" in text  # the 20th bad row (lines 2..21)
    assert f"{path}:22:" not in text
    assert "... and 5 more" in text


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("missing.csv", "missing.csv: no such file"),
        ("builtin:nope.csv", "builtin:nope.csv: no such built-in trace file"),
    ],
    ids=["path", "builtin"],
)
def test_missing_files(tmp_path: Path, source: str, message: str) -> None:
    target = source if source.startswith("builtin:") else tmp_path / source
    with pytest.raises(TraceError, match=message):
        load_pods(target)
    with pytest.raises(TraceError, match=message):
        load_nodes(target)


def test_trace_error_is_a_value_error() -> None:
    assert issubclass(TraceError, ValueError)


# --- the published reference ----------------------------------------------------------------

REFERENCE_HEADER = "workload,sc_policy,tune,seed,total_gpus,99,100,101"


def test_load_reference(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        REFERENCE_HEADER,
        "openb_pod_list_default,06-FGD,1.3,42,6212,95.0,95.23,96.0",  # 100-95.23 = 4.77
        "openb_pod_list_default,06-FGD,1.3,43,6212,95.0,95.06,96.0",  # 4.94
        "openb_pod_list_default,05-BestFit,1.3,42,6212,92.0,92.94,93.0",  # 7.06
        "openb_pod_list_default,99-Other,1.3,42,6212,1,2,3",  # not a known policy: skipped
        "openb_pod_list_gpushare60,06-FGD,1.3,42,6212,1,2,3",  # another workload: skipped
    )
    assert load_reference(path, "openb_pod_list_default") == {
        "fgd": {42: 4.77, 43: 4.94},
        "bestfit": {42: 7.06},
    }
    assert load_reference(path, "openb_pod_list_multigpu20") == {}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([REFERENCE_HEADER, "w,06-FGD,1.3,42,6212,1,x,3"], ":2: no seed or no number"),
        (["workload,sc_policy,seed", "w,06-FGD,42"], ":2: no seed or no number"),
        ([REFERENCE_HEADER, "w,06-FGD,1.3,x,6212,1,2,3"], ":2: no seed or no number"),
    ],
    ids=["not-a-number", "no-column", "no-seed"],
)
def test_load_reference_refuses(tmp_path: Path, lines: list[str], message: str) -> None:
    path = write(tmp_path, *lines)
    with pytest.raises(TraceError) as error:
        load_reference(path, "w")
    assert f"{path}{message}" in str(error.value)


def test_load_reference_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such reference file"):
        load_reference(tmp_path / "none.csv", "w")
