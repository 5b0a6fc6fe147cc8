"""Shared pieces of the CLI commands: config arguments and error reporting."""

from __future__ import annotations

import argparse
import sys

from mmfw.components import Registries, default_registries
from mmfw.config import ExperimentConfig, load_config
from mmfw.errors import ConfigError, DataError, InvalidArgumentError


class CLIError(Exception):
    """An error the CLI reports as one line (per problem) without a traceback; exit code 2 by default."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value by dotted path, e.g. --set training.learning_rate=1e-4")


def load_experiment(args: argparse.Namespace, registries: Registries | None = None,
                    validate: bool = True) -> ExperimentConfig:
    """The experiment config of ``args.config`` with ``--set`` overrides; with ``validate``, also checked against
    the file system and the model geometry (:mod:`mmfw.training.validate`) before anything is built."""
    registries = registries or default_registries()
    cfg = load_config(args.config, registries, args.overrides)
    if validate:
        from mmfw.training.validate import check_experiment

        check_experiment(cfg, registries, source=args.config)
    return cfg


def report(err: BaseException) -> int:
    """Print an expected error as one line per problem; return the exit code."""
    if isinstance(err, ConfigError):
        for line in str(err).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    if isinstance(err, CLIError):
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    if isinstance(err, DataError | InvalidArgumentError):
        for line in str(err).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
    return 1
