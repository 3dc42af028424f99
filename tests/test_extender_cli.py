"""The command line and the package surface."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import extender
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
