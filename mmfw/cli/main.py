"""``mmfw`` command line: one sub-module per command, each with ``add_parser(subparsers)`` setting ``func``."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import os
import sys
from collections.abc import Sequence

from mmfw import __version__
from mmfw.cli.common import CLIError, report, report_internal
from mmfw.errors import MMFWError

COMMAND_MODULES = (
    "mmfw.cli.train",
    "mmfw.cli.generate",
    "mmfw.cli.chat",
    "mmfw.cli.data",
    "mmfw.cli.list",
    "mmfw.cli.schema",
    "mmfw.cli.inspect",
    "mmfw.cli.export",
    "mmfw.cli.merge",
    "mmfw.cli.plot",
    "mmfw.cli.eval",
    "mmfw.cli.sweep",
)

EXPECTED_ERRORS = (MMFWError, CLIError, FileNotFoundError)
"""Errors about the user's input, printed as one line each (exit code 2). Anything else is a bug: one line saying so
and to rerun with ``--debug`` (exit code 1); ``--debug`` shows the traceback of every error."""


def version_string() -> str:
    """``mmfw X (torch Y, transformers Z, python W)``: what ``mmfw --version`` prints (no library is imported)."""
    libs = []
    for name in ("torch", "transformers"):
        try:
            libs.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            libs.append(f"{name} not installed")
    return f"mmfw {__version__} ({', '.join(libs)}, python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmfw", description="Modular vision-language models from YAML.")
    parser.add_argument("--version", action="version", version=version_string())
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors in the log")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def _stdout_closed() -> int:
    """The reader of stdout went away (``mmfw list | head -1``): stop quietly, as Unix tools do (exit 141)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush then has nowhere to fail
    return 128 + 13  # SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.command is None:  # bare `mmfw`: the commands and what they do
            parser.print_help()
            code = 0
        else:
            code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except EXPECTED_ERRORS as err:
        if args.debug:
            raise
        return report(err)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (Exception, RecursionError, MemoryError) as err:  # a bug (or a case mmfw does not locate yet)
        if args.debug:
            raise
        return report_internal(err)


if __name__ == "__main__":
    sys.exit(main())
