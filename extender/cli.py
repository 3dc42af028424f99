"""The ``fairpack`` command.

The service's own modules never import ``benchmarks``; only the subcommands that
need it (simulate, bench, demo) import it, lazily.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def _configmap(text: str) -> tuple[str, str]:
    namespace, _, name = text.partition("/")
    if not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAMESPACE/NAME")
    return namespace, name


def _node_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected counts like 500,5000") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive counts like 500,5000")
    return counts


def _whole_number(low: int, high: int | None, out_of_range: str) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` (to ``high``), else ``out_of_range``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(out_of_range.format(value=value))
        return value

    return parse


_positive = _whole_number(1, None, "{value} must be at least 1")
_seed = _whole_number(0, None, "{value}: seeds are whole numbers from 0")
_port = _whole_number(1, 65535, "{value}: a port is 1..65535")


def _names(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


def _webhook_listener(args: argparse.Namespace) -> Any:
    from extender.server import WebhookListener
    from extender.webhook import WebhookConfig

    if args.webhook_port is None:
        return None
    cert = args.webhook_tls_cert or args.tls_cert
    key = args.webhook_tls_key or args.tls_key
    if (args.webhook_tls_cert is None) != (args.webhook_tls_key is None):
        args.parser.error("--webhook-tls-cert and --webhook-tls-key go together")
    if cert is None or key is None:
        args.parser.error(
            "--webhook-port needs a certificate (--webhook-tls-cert/--webhook-tls-key or "
            "--tls-cert/--tls-key): the API server calls webhooks over HTTPS only"
        )
    if not args.required_labels:
        logging.getLogger("extender.webhook").warning(
            "--required-labels is empty: /validate admits GPU pods without any label "
            "(give LABEL,... to require some)"
        )
    config = WebhookConfig(
        required_labels=args.required_labels,
        exempt_namespaces=frozenset(args.exempt_namespaces),
        scheduler_name=args.route_to_scheduler,
    )
    return WebhookListener(args.webhook_port, cert, key, args.webhook_host, config)


def _run_serve(args: argparse.Namespace) -> int:
    from extender.server import ServeError, ServeOptions, serve_cluster, serve_inventory

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if (args.tls_cert is None) != (args.tls_key is None):
        args.parser.error("--tls-cert and --tls-key go together")
    if args.client_ca is not None and args.tls_cert is None:
        args.parser.error("--client-ca needs --tls-cert and --tls-key")
    options = ServeOptions(
        args.host,
        args.port,
        args.tls_cert,
        args.tls_key,
        args.client_ca,
        _webhook_listener(args),
    )
    if args.inventory is not None:
        from benchmarks.traces import TraceError, load_nodes

        try:
            nodes = load_nodes(args.inventory)
        except TraceError as exc:
            print(f"fairpack serve: {exc}", file=sys.stderr)
            return 2
    try:
        if args.inventory is not None:
            asyncio.run(serve_inventory(nodes, options))
        else:
            asyncio.run(
                serve_cluster(options, configmap=args.configmap, kubeconfig=args.kubeconfig)
            )
    except ServeError as exc:
        print(f"fairpack serve: {exc}", file=sys.stderr)
        return 2
    return 0


def _add_serve(commands: Any) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the extender (over the cluster, or over a static node list)",
        description="Serve kube-scheduler's extender verbs (filter, prioritize, preempt, bind).",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=_port, default=8888, help="port (default 8888)")
    parser.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    parser.add_argument(
        "--client-ca", type=Path, help="require client certificates from this CA (mutual TLS)"
    )
    parser.add_argument(
        "--configmap",
        type=_configmap,
        default=("fairpack-system", "fairpack-config"),
        metavar="NAMESPACE/NAME",
        help="policy ConfigMap, reloaded live (default fairpack-system/fairpack-config)",
    )
    parser.add_argument(
        "--kubeconfig", help="kubeconfig file (default: in-cluster, else ~/.kube/config)"
    )
    parser.add_argument(
        "--inventory",
        metavar="NODES.csv",
        help="serve over this openb node list instead of a cluster (binds update memory only)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    webhook = parser.add_argument_group(
        "admission webhooks",
        "A second, HTTPS-only listener for the API server and Prometheus: POST /validate, "
        "POST /mutate, GET /healthz, /readyz, /metrics (never the extender verbs).",
    )
    webhook.add_argument("--webhook-port", type=_port, help="serve the webhooks on this port")
    webhook.add_argument("--webhook-host", default="0.0.0.0", help="(default 0.0.0.0)")
    webhook.add_argument(
        "--webhook-tls-cert", type=Path, help="its certificate (PEM; default --tls-cert)"
    )
    webhook.add_argument("--webhook-tls-key", type=Path, help="its key (default --tls-key)")
    webhook.add_argument(
        "--required-labels",
        type=_names,
        default=("team", "cost-center"),
        metavar="LABEL,...",
        help="labels GPU pods and pod templates must carry (default team,cost-center; "
        "'' requires none)",
    )
    webhook.add_argument(
        "--exempt-namespaces",
        type=_names,
        default=("kube-system", "kube-public", "kube-node-lease", "fairpack-system"),
        metavar="NS,...",
        help="namespaces both webhooks leave alone "
        "(default kube-system,kube-public,kube-node-lease,fairpack-system)",
    )
    webhook.add_argument(
        "--route-to-scheduler",
        default="fairpack-scheduler",
        metavar="NAME",
        help="scheduler /mutate routes GPU pods to (default fairpack-scheduler)",
    )
    parser.set_defaults(run=_run_serve, parser=parser)


def _run_demo(args: argparse.Namespace) -> int:
    from benchmarks import demo

    return int(demo.main(args))


def _add_demo(commands: Any) -> None:
    parser = commands.add_parser(
        "demo",
        help="replay the built-in trace through the extender's HTTP API, as kube-scheduler would",
        description=(
            "Start the extender on loopback over the built-in node list and replay the built-in "
            "trace through /filter, /prioritize and /bind; print placement quality and latency."
        ),
    )
    parser.add_argument(
        "--pods", type=_positive, help="replay only the first N pods (default: all)"
    )
    parser.add_argument("--seed", type=_seed, default=42, help="shuffle seed (default 42)")
    parser.add_argument("--nodes", default=None, help="openb node list CSV (default: built-in)")
    parser.add_argument("--trace", default=None, help="openb pod list CSV (default: built-in)")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run_demo)


def _run_bench_latency(args: argparse.Namespace) -> int:
    from benchmarks.latency import main as bench_latency

    return int(bench_latency(args))


def _run_bench_view(args: argparse.Namespace) -> int:
    from benchmarks.latency import main_view as bench_view

    return int(bench_view(args))


def _run_bench_kube(args: argparse.Namespace) -> int:
    from benchmarks.kube_throughput import main as bench_kube

    return int(bench_kube(args))


def _add_bench(commands: Any) -> None:
    parser = commands.add_parser(
        "bench", help="benchmarks of the extender (latency, view size, kube-scheduler throughput)"
    )
    benches = parser.add_subparsers(dest="bench", required=True, metavar="BENCH")
    latency = benches.add_parser(
        "latency",
        help="server-side and round-trip latency of filter and prioritize, against a transport floor",
    )
    latency.add_argument(
        "--nodes",
        type=_node_counts,
        default=[500, 5000, 15000],
        help="node counts (default 500,5000,15000)",
    )
    latency.add_argument(
        "--decisions", type=_positive, default=1000, help="pods per node count (default 1000)"
    )
    latency.add_argument(
        "--node-order",
        choices=["shuffled", "fixed"],
        default="shuffled",
        help=(
            "order of NodeNames in each filter: shuffled (default), as kube-scheduler's"
            " parallel filter finds the nodes in another order every cycle; fixed, the same"
            " list every time (the best case)"
        ),
    )
    latency.add_argument(
        "--filter-passes",
        choices=["best", "feasible"],
        default="best",
        help=(
            "the server's filter_passes: best (default, as shipped), one node, which"
            " kube-scheduler binds without prioritize; feasible, every node that fits, then"
            " prioritize over them all and a bind of the top one"
        ),
    )
    latency.add_argument("--seed", type=_seed, default=42)
    latency.add_argument("--json", type=Path, help="write the figures here")
    latency.set_defaults(run=_run_bench_latency)
    view = benches.add_parser("view", help="memory and sync time of the cluster view")
    view.add_argument("--nodes", type=_positive, default=5000)
    view.add_argument("--pods", type=_positive, default=100_000)
    view.add_argument("--seed", type=_seed, default=42)
    view.add_argument("--json", type=Path, help="write the figures here")
    view.set_defaults(run=_run_bench_view)
    kube = benches.add_parser(
        "kube",
        help="pods bound per second by a real kube-scheduler, without and with fairpack",
        description=(
            "Start a control plane on loopback with fake GPU nodes and measure kube-scheduler's "
            "throughput from the shipped configuration, without the extender and with it, at "
            "percentageOfNodesToScore default and 100. Needs the binaries of "
            "scripts/build-control-plane.sh."
        ),
    )
    from benchmarks.kube_throughput import add_arguments as kube_arguments

    kube_arguments(kube, _node_counts, _positive)
    kube.set_defaults(run=_run_bench_kube)


def _plot_formats() -> set[str]:
    from matplotlib.backend_bases import FigureCanvasBase

    return set(FigureCanvasBase.get_supported_filetypes())


def _output_problem(path: Path, flag: str) -> str | None:
    """Why ``path`` cannot be written, found before a long run rather than after it."""
    if path.is_dir():
        return f"{flag} {path}: is a directory; give a file name"
    if flag == "--plot" and path.suffix and path.suffix[1:].lower() not in _plot_formats():
        return f"{flag} {path}: cannot write {path.suffix} images; use .png, .svg or .pdf"
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a"):
            pass
        if not existed:
            path.unlink()
    except (FileExistsError, NotADirectoryError):
        return f"{flag} {path}: a parent of it is a file, not a directory; give another path"
    except OSError as exc:
        return f"{flag} {path}: cannot write there ({exc.strerror or exc}); give another path"
    return None


def _check_outputs(args: argparse.Namespace) -> str | None:
    for flag in ("--json", "--plot"):
        path = getattr(args, flag[2:], None)
        if path is not None:
            problem = _output_problem(Path(path), flag)
            if problem is not None:
                return problem
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fairpack", description="GPU-aware scheduler extender for Kubernetes."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from benchmarks import simulate_cli

    simulate_cli.add_parser(commands)
    _add_serve(commands)
    _add_demo(commands)
    _add_bench(commands)

    args = parser.parse_args(argv)
    problem = _check_outputs(args)
    if problem is not None:
        print(f"fairpack {args.command}: {problem}", file=sys.stderr)
        return 2
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
