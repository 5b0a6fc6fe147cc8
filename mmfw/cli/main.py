"""``mmfw`` command line: one sub-module per command, each with ``add_parser(subparsers)`` setting ``func``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from mmfw.cli.common import CLIError, report
from mmfw.config import ConfigError
from mmfw.registry import RegistryError
from mmfw.training.errors import TrainingError

COMMAND_MODULES = (
    "mmfw.cli.train",
    "mmfw.cli.generate",
    "mmfw.cli.data",
    "mmfw.cli.list",
    "mmfw.cli.schema",
    "mmfw.cli.inspect",
    "mmfw.cli.export",
    "mmfw.cli.merge",
    "mmfw.cli.sweep",
)

EXPECTED_ERRORS = (ConfigError, CLIError, RegistryError, FileNotFoundError, ValueError, TrainingError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmfw", description="Modular vision-language models from YAML.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors in the log")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except EXPECTED_ERRORS as err:
        if args.debug:
            raise
        return report(err)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
