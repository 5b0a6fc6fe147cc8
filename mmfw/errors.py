"""Every error mmfw raises for input it cannot use, and the constants shared across layers.

The bottom layer of the package: it imports nothing from mmfw (and nothing heavy), so any module, the CLI included,
can raise or catch these without importing torch. Each error names where the problem is (a YAML path, a file, a
record, a run directory); the CLI prints :class:`MMFWError` subclasses as one line per problem with exit code 2 and
no traceback (``--debug`` shows it).

Errors that describe bad data keep ``ValueError`` as a base (:class:`DataError`, :class:`FusionError`...) so that
code catching ``ValueError`` keeps working; the CLI does not catch ``ValueError`` itself, so a bug's traceback is
never hidden.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

__all__ = [
    "IGNORE_INDEX", "MMFWError", "ConfigError", "RegistryError", "UnknownComponentError", "DuplicateComponentError",
    "PluginLoadError", "InvalidArgumentError", "DataError", "RecordError", "TooManySkippedError", "TemplateMismatchError",
    "ImageTokenCountError", "FusionError", "CheckpointMismatchError", "TokenizerRequiredError", "ExportError",
    "TrainingError", "NonFiniteLossError", "RunExistsError", "closest_first", "format_choices",
]

IGNORE_INDEX = -100
"""Label of a position that is not supervised (prompt, image and padding tokens); PyTorch's cross-entropy default."""


class MMFWError(Exception):
    """Base of the errors mmfw raises for input it cannot use (reported by the CLI without a traceback)."""


# -- config and registry -------------------------------------------------------------------------------------------
class ConfigError(MMFWError):
    """A config problem; ``problems`` holds one ``"location: message"`` line per problem.

    A component that rejects its own config raises it with locations relative to its config (``"grid_pinpoints[1]:
    ..."``); :meth:`at` puts the YAML path the caller knows in front (``"model.image_strategy.grid_pinpoints[1]"``).
    """

    def __init__(self, problems: Sequence[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        prefix = f"{self.source}: " if self.source else ""
        return "\n".join(prefix + p for p in self.problems)

    def at(self, path: str) -> ConfigError:
        """The same problems located under ``path`` (a dotted YAML path); a problem already located there (a
        component that names its full path) is kept as it is."""
        return ConfigError([p if p.startswith(f"{path}.") else f"{path}.{p}" if p[:1] not in ("[", "") else
                            f"{path}{p}" for p in self.problems], source=self.source)


def closest_first(name: str, choices: list[str]) -> list[str]:
    """Return ``choices`` sorted with the closest matches to ``name`` first (then alphabetically)."""
    close = difflib.get_close_matches(name, choices, n=len(choices), cutoff=0.0)
    ranked = [c for c in close if difflib.SequenceMatcher(None, name, c).ratio() >= 0.5]
    return ranked + sorted(c for c in choices if c not in ranked)


def format_choices(name: str, choices: list[str]) -> str:
    """Human-readable list of valid choices, with a 'did you mean' for the closest one."""
    if not choices:
        return "nothing is registered"
    ordered = closest_first(name, choices)
    hint = ""
    if ordered and difflib.SequenceMatcher(None, name, ordered[0]).ratio() >= 0.5:
        hint = f"did you mean {ordered[0]!r}? "
    return hint + "valid choices: " + ", ".join(repr(c) for c in ordered)


class RegistryError(MMFWError):
    """Base class of registry errors."""


class UnknownComponentError(RegistryError, KeyError):
    """A name that no plugin registered."""

    def __init__(self, kind: str, name: str, choices: list[str]) -> None:
        self.kind, self.name, self.choices = kind, name, choices
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"unknown {self.kind} {self.name!r}; {format_choices(self.name, self.choices)}"

    def __str__(self) -> str:
        return self.message


class DuplicateComponentError(RegistryError):
    """The same name registered twice."""


class PluginLoadError(RegistryError):
    """An installed plugin (``mmfw.plugins`` entry point) could not be imported."""


class InvalidArgumentError(MMFWError, ValueError):
    """An argument of a public function (a CLI flag, a generator setting) outside its valid values; names it."""


# -- data ----------------------------------------------------------------------------------------------------------
class DataError(MMFWError, ValueError):
    """A problem with the data (not with the code): reported as one line per problem, exit code 2."""


class RecordError(DataError):
    """A record or sample that cannot be used. ``reason_code`` is a short slug such as ``"bad-role"`` (the codes
    mmfw uses are listed in :data:`mmfw.data.errors.REASONS`)."""

    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(f"[{reason_code}] {message}")
        self.reason_code = reason_code
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across DataLoader workers
        return (type(self), (self.reason_code, self.message))


class TooManySkippedError(DataError):
    """More than ``data.max_skip_ratio`` of a dataset's samples were skipped."""


class TemplateMismatchError(ValueError):
    """The chat template is not prefix-stable for a sample, so assistant spans cannot be located reliably."""


class ImageTokenCountError(ValueError):
    """The rendered conversation has a different number of image placeholders than images were given."""


# -- model ---------------------------------------------------------------------------------------------------------
class FusionError(ValueError):
    """Image placeholders and image features disagree. ``sample`` is the batch row at fault, when there is one."""

    def __init__(self, message: str, sample: int | None = None) -> None:
        super().__init__(message)
        self.sample = sample

    def naming_records(self, record_ids: Sequence[str]) -> FusionError:
        """This error with the record id of its sample added (``record_ids``: one per batch row)."""
        if self.sample is None or not 0 <= self.sample < len(record_ids):
            return self
        return FusionError(f"{self} [sample {self.sample} is record {record_ids[self.sample]!r}]", self.sample)


class CheckpointMismatchError(MMFWError, ValueError):
    """A checkpoint's tensors do not fit the model built from its config (names or shapes)."""


class TokenizerRequiredError(MMFWError, ValueError):
    """The LLM cannot be built without its tokenizer (shape-only builds need ``architecture.vocab_size``)."""


class ExportError(MMFWError, ValueError):
    """The model (or one of its components) has no mapping to the requested transformers format."""


# -- training ------------------------------------------------------------------------------------------------------
class TrainingError(MMFWError):
    """Base of errors that end a run for a reason the user can act on."""


class NonFiniteLossError(TrainingError):
    """The loss (or the gradient norm) was NaN or infinite more often than ``training.max_bad_steps`` allows."""


class RunExistsError(TrainingError):
    """The run directory already holds progress and neither resuming nor overwriting was asked for."""
