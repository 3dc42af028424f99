"""The ``fairpack`` command.

The service's own modules never import ``benchmarks``; only the subcommands that
need it (simulate, bench, demo) import it, lazily.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fairpack", description="GPU-aware scheduler extender for Kubernetes."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from benchmarks import simulate_cli

    simulate_cli.add_parser(commands)

    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
