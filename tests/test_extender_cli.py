"""The command line and the package surface."""

from __future__ import annotations

import gc
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

import extender
from benchmarks.latency import after_answer
from extender import Metrics
from extender.cli import main


def test_the_public_surface_is_pinned() -> None:
    assert sorted(extender.__all__) == [
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


def test_the_service_never_imports_benchmarks() -> None:
    code = (
        "import sys, extender, extender.app, extender.service, extender.server, extender.watch;"
        "print([m for m in sys.modules if m.startswith('benchmarks')])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["serve", "--tls-cert", "c.pem"],
            "--tls-cert and --tls-key go together",
            id="cert-without-key",
        ),
        pytest.param(
            ["serve", "--client-ca", "ca.pem"], "--client-ca needs --tls-cert", id="ca-without-tls"
        ),
        pytest.param(
            ["serve", "--configmap", "no-slash"], "expected NAMESPACE/NAME", id="bad-configmap"
        ),
        pytest.param(
            ["bench", "latency", "--nodes", "0"], "expected positive counts", id="bad-node-counts"
        ),
        pytest.param(["demo", "--pods", "none"], "is not a whole number", id="bad-pods"),
        pytest.param(["demo", "--seed", "-1"], "seeds are whole numbers from 0", id="bad-seed"),
        pytest.param(["serve", "--port", "70000"], "a port is 1..65535", id="bad-port"),
    ],
)
def test_bad_arguments_exit_2_with_the_reason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_serve_with_a_missing_inventory_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--inventory", "/nonexistent/nodes.csv"]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.fixture
def unfreeze_after() -> Iterator[None]:
    yield
    gc.unfreeze()  # serving an inventory freezes the heap


def test_serve_on_a_port_in_use_says_so(
    capsys: pytest.CaptureFixture[str], unfreeze_after: None
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["serve", "--inventory", "builtin:openb_node_list_gpu_node.csv"]
        assert main([*argv, "--host", "127.0.0.1", "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls-cert", "{tmp}/none.pem", "--tls-key", "{tmp}/none.key"], "none.pem: no such file"),
        (["--tls-cert", "{tmp}/bad.pem", "--tls-key", "{tmp}/bad.pem"], "give PEM files"),
        (["--kubeconfig", "{tmp}/none.yaml"], "--kubeconfig {tmp}/none.yaml: no such file"),
    ],
    ids=["missing-certificate", "not-a-certificate", "missing-kubeconfig"],
)
def test_serve_with_unusable_files_says_which(
    flags: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    unfreeze_after: None,
) -> None:
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    flags = [flag.replace("{tmp}", str(tmp_path)) for flag in flags]
    if "--kubeconfig" not in flags:
        flags += ["--inventory", "builtin:openb_node_list_gpu_node.csv"]
    assert main(["serve", "--host", "127.0.0.1", "--port", "1", *flags]) == 2
    assert message.replace("{tmp}", str(tmp_path)) in capsys.readouterr().err


def test_serve_with_a_kubeconfig_that_is_not_yaml_says_so_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("clusters: [\n")
    assert main(["serve", "--kubeconfig", str(kubeconfig)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fairpack serve: no cluster to serve: {kubeconfig}: ")
    assert err.endswith("; give --kubeconfig, or --inventory NODES.csv\n")
    assert err.count("\n") == 1


def test_serve_outside_a_pod_without_a_kubeconfig_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none.yaml"))
    assert main(["serve"]) == 2
    assert capsys.readouterr().err == (
        f"fairpack serve: no cluster to serve: not in a pod, and no kubeconfig at"
        f" {tmp_path / 'none.yaml'}; give --kubeconfig, or --inventory NODES.csv\n"
    )


def test_the_demo_over_nodes_without_gpus_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes = tmp_path / "cpu.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,0,\n")
    assert main(["demo", "--pods", "5", "--quiet", "--nodes", str(nodes)]) == 2
    assert "the nodes have no GPUs" in capsys.readouterr().err


def test_bench_kube_without_binaries_says_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "kube", "--bin-dir", str(tmp_path), "--nodes", "1", "--pods", "8"]
    assert main(argv) == 2
    assert "run scripts/build-control-plane.sh" in capsys.readouterr().err


def test_the_demo_replays_pods_through_http(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo.json"
    assert main(["demo", "--pods", "40", "--quiet", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["pods"] == 40
    assert summary["placed"] + summary["failed"] == 40
    assert summary["view_matches_binds"]
    # filter passes one node (filter_passes: best): nothing to prioritize
    assert set(summary["latency_ms"]) == {"filter", "bind"}
    printed = capsys.readouterr().out
    assert "placed 40, failed 0" in printed
    assert "latency (ms)" in printed


def test_bench_latency_reports_the_issue_keys_and_the_work_after_answers(tmp_path: Path) -> None:
    out = tmp_path / "latency.json"
    assert main(["bench", "latency", "--nodes", "30", "--decisions", "8", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())["nodes"]["30"]
    for key in ("filter_p99_ms", "prioritize_p99_ms", "roundtrip_p99_ms", "floor_p99_ms"):
        assert figures[key] > 0
    # Filter leaves explain's record and its rejection counts for after its answer.
    assert (
        0 < figures["filter_after_answer_mean_ms"] <= figures["filter_after_answer_p99_at_most_ms"]
    )
    # As shipped, filter passes one node and counts the pod there: nothing to bind.
    assert 0 < figures["mean_nodes_passed_filter"] <= 1 and figures["binds"] == 0


def test_bench_latency_feasible_scores_every_node_passed_and_binds_the_top(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "latency.json"
    argv = ["bench", "latency", "--nodes", "30", "--decisions", "8", "--json", str(out)]
    assert main([*argv, "--filter-passes", "feasible"]) == 0
    report = json.loads(out.read_text())
    figures = report["nodes"]["30"]
    assert report["filter_passes"] == "feasible"
    assert figures["mean_nodes_passed_filter"] > 1 and figures["binds"] > 0
    assert "filter_passes: feasible" in capsys.readouterr().out


def test_after_answer_figures_come_from_the_servers_histogram() -> None:
    metrics = Metrics()
    for seconds in [0.0002] * 98 + [0.003, 0.003]:
        metrics.after_answer_seconds.labels("filter").observe(seconds)
    figures = after_answer(generate_latest(metrics.registry).decode())
    assert figures["filter_after_answer_mean_ms"] == pytest.approx((98 * 0.2 + 6) / 100)
    assert figures["filter_after_answer_p99_at_most_ms"] == 5.0  # the bucket holding the 99th
    assert "prioritize_after_answer_mean_ms" not in figures  # none observed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--json", "{tmp}"], "--json {tmp}: is a directory", id="json-directory"),
        pytest.param(
            ["--json", "{tmp}/file/out.json"], "a parent of it is a file", id="json-under-a-file"
        ),
        pytest.param(["--plot", "{tmp}/out.foo"], "cannot write .foo images", id="plot-format"),
        pytest.param(["--plot", "/proc/out.png"], "cannot write there", id="plot-unwritable"),
    ],
)
def test_an_unwritable_output_is_refused_before_the_run(
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks import simulate_cli

    def no_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("simulated before checking the outputs")

    monkeypatch.setattr(simulate_cli, "report_for", no_run)
    (tmp_path / "file").write_text("")
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    assert main(["simulate", "--seeds", "42", *argv]) == 2
    assert message.replace("{tmp}", str(tmp_path)) in capsys.readouterr().err


def test_a_plot_path_without_a_suffix_is_the_file_written(tmp_path: Path) -> None:
    out = tmp_path / "allocation"
    spec = "synthetic:nodes=20,mix=h100x8:1"
    argv = ["simulate", "--cluster", spec, "--workload", "synthetic:llm-serving"]
    argv += ["--policy", "bestfit", "--seeds", "42", "--jobs", "1", "--quiet", "--plot", str(out)]
    assert main(argv) == 0
    assert out.read_bytes().startswith(b"\x89PNG")
    assert not out.with_suffix(".png").exists()
