"""Shared pieces of the CLI commands: config arguments and error reporting."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mmfw.components import Registries, default_registries
from mmfw.config import ExperimentConfig, load_config
from mmfw.errors import ConfigError, DataError, InvalidArgumentError

if TYPE_CHECKING:
    from mmfw.training.validate import ValidationContext


class CLIError(Exception):
    """An error the CLI reports as one line (per problem) without a traceback; exit code 2 by default."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value by dotted path, e.g. --set training.learning_rate=1e-4")


def load_experiment(args: argparse.Namespace, registries: Registries | None = None,
                    validate: bool = True) -> ExperimentConfig:
    """The experiment config of ``args.config`` with ``--set`` overrides; with ``validate``, also checked against
    the file system and the model geometry (:mod:`mmfw.training.validate`) before anything is built."""
    registries = registries or default_registries()
    if validate:
        return load_checked_experiment(args, registries)[0]
    return load_config(args.config, registries, args.overrides)


def load_checked_experiment(args: argparse.Namespace,
                            registries: Registries) -> tuple[ExperimentConfig, ValidationContext]:
    """``load_experiment(args, registries)`` and the :class:`~mmfw.training.validate.ValidationContext` that checked
    it, whose cached facts (its meta-device model) later steps may reuse instead of building them again."""
    from mmfw.training.validate import ValidationContext, check_experiment

    cfg = load_config(args.config, registries, args.overrides)
    context = ValidationContext(cfg, registries)
    check_experiment(cfg, registries, source=args.config, context=context)
    return cfg, context


def require_prepared(cfg: ExperimentConfig, config_path: str) -> None:
    """A one-line error naming the command that generates what the config declares but is not there yet."""
    from mmfw.training.data_prep import pending_outputs

    pending = pending_outputs(cfg.data)
    if pending:
        raise CLIError(f"{config_path}: not generated yet: {'; '.join(pending)}. Run `mmfw data check --prepare "
                       f"{config_path}` (or `mmfw train {config_path}`) first, which generates it")


def check_new_output_dir(out: str | Path, flag: str = "OUT") -> Path:
    """``out`` can be created as a new directory: it does not exist (or is an empty directory) and no file is on the
    way to it. Nothing written before is ever replaced."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise CLIError(f"{flag} {out}: is a file; choose a new directory")
        if any(out.iterdir()):
            raise CLIError(f"{flag} {out}: directory is not empty; choose a new directory (nothing is overwritten)")
        return out
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CLIError(f"{flag} {out}: cannot be created, {parent} is a file")
            break
    return out


@contextlib.contextmanager
def located_model_errors(source: str) -> Iterator[None]:
    """Errors of loading the model of ``source`` (a run or model directory) as one-line CLI errors naming it."""
    try:
        yield
    except ValueError as e:
        from mmfw.model.builder import CheckpointMismatchError

        if isinstance(e, CheckpointMismatchError):
            raise CLIError(f"{source}: {e}") from e
        raise


def report(err: BaseException) -> int:
    """Print an expected error as one line per problem; return the exit code (2: bad input)."""
    code = int(getattr(err, "exit_code", 2))  # CLIError's, or an interrupted run's 130
    text = str(err) if isinstance(err, ConfigError | CLIError) else _describe(err)
    for line in text.splitlines() or [type(err).__name__]:
        print(f"error: {line}", file=sys.stderr)
    return code


def _describe(err: BaseException) -> str:
    if isinstance(err, DataError | InvalidArgumentError):
        return str(err)
    if isinstance(err, FileNotFoundError) and err.filename:  # an OS error: errno, strerror, filename
        return f"file not found: {err.filename}"
    return str(err) or type(err).__name__


def report_internal(err: BaseException) -> int:
    """An unexpected error (a bug, or a failure mmfw does not locate yet): one line and exit code 1."""
    print(f"error: internal error: {type(err).__name__}: {err} (rerun with `mmfw --debug ...` for the traceback, "
          "and report it)", file=sys.stderr)
    return 1
