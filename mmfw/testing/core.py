"""The machinery of the kit: a component under test, named contracts, and the violation they raise.

A :class:`Contract` is one promise a component of some kind makes (``"connectors:token-count"``: ``forward``
returns ``num_tokens(grid)`` rows). Its check receives a :class:`ComponentUnderTest` and calls
:meth:`ComponentUnderTest.fail` with what it saw and what to fix; an exception the component itself raises inside a
check is reported the same way. Either way the result is a :class:`ContractViolation`, an ``AssertionError``
whose message names the component, the contract and the fix, e.g.::

    connector 'foo': token-count: forward returned 17 tokens per image for grid (4, 4) but num_tokens((4, 4))
    says 16: num_tokens must return what forward produces
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mmfw.components import Registries, collect_registries, make_plugin_manager

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from mmfw.config.base import ComponentConfig

KINDS = ("vision_encoders", "connectors", "llms", "image_strategies")
"""Registry attributes of :class:`~mmfw.components.Registries`, in model order."""
SLOTS = {"vision_encoders": "vision_encoder", "connectors": "connector", "llms": "llm",
         "image_strategies": "image_strategy"}
"""The :class:`~mmfw.config.experiment.ModelConfig` field of each kind."""
BASE_COMBO = {"vision_encoders": "clip", "connectors": "mlp", "llms": "llama", "image_strategies": "resize"}
"""The partners a component is composed with into a whole model (itself in its own slot)."""


class ContractViolation(AssertionError):
    """A component breaks a contract; the message says which component, which contract and what to fix."""

    def __init__(self, message: str, violations: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.violations = list(violations) or [message]


@dataclass(frozen=True)
class Contract:
    """One named promise of a component kind; ``check`` calls :meth:`ComponentUnderTest.fail` when it is broken."""

    kind: str
    name: str
    summary: str
    check: Callable[[ComponentUnderTest], None]

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.name}"


_CONTRACTS: dict[str, list[Contract]] = {kind: [] for kind in KINDS}


def contract(kinds: str | Iterable[str], name: str) -> Callable[[Callable[[ComponentUnderTest], None]],
                                                                 Callable[[ComponentUnderTest], None]]:
    """Declare the decorated function as contract ``name`` of each of ``kinds``; its docstring's first line is the
    summary."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)

    def wrap(fn: Callable[[ComponentUnderTest], None]) -> Callable[[ComponentUnderTest], None]:
        summary = (fn.__doc__ or name).strip().splitlines()[0]
        for kind in kinds:
            if any(c.name == name for c in _CONTRACTS[kind]):
                raise ValueError(f"contract {kind}:{name} is declared twice")
            _CONTRACTS[kind].append(Contract(kind, name, summary, fn))
        return fn

    return wrap


def contracts(kind: str) -> list[Contract]:
    """Every contract of component kind ``kind`` (a :class:`~mmfw.components.Registries` attribute), in order."""
    from mmfw.testing import checks  # noqa: F401  (declares the contracts)

    if kind not in _CONTRACTS:
        raise ValueError(f"unknown component kind {kind!r}; valid: {', '.join(KINDS)}")
    return list(_CONTRACTS[kind])


class _Failure(Exception):
    """Raised by :meth:`ComponentUnderTest.fail`; turned into a :class:`ContractViolation` by ``check``."""


class _NotApplicable(Exception):
    """Raised by :meth:`ComponentUnderTest.not_applicable`; ``check`` returns its reason."""


def installed_registries(plugins: Sequence[Any] = ()) -> Registries:
    """mmfw's components, every installed plugin (entry points) and the given plugin modules or objects (those
    already installed are not registered twice)."""
    pm = make_plugin_manager()
    for i, plugin in enumerate(plugins):
        if not pm.is_registered(plugin):
            pm.register(plugin, name=getattr(plugin, "__name__", f"extra-plugin-{i}"))
    return collect_registries(pm)


@functools.cache
def tiny_tokenizer_dir() -> Path:
    """A small offline byte-level BPE tokenizer (with a ChatML template), trained once per process into a temporary
    directory (removed at exit): what an LLM's ``example(tokenizer=...)`` config is built over."""
    from mmfw.data.tokenizer_train import train_tokenizer

    texts = ["What colour is the square?", "a red square on the left", "two circles and a blue triangle",
             "How many shapes are there?", "You answer briefly.", "only text here, no image at all"] * 4
    out = Path(tempfile.mkdtemp(prefix="mmfw-testing-tokenizer-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    train_tokenizer(texts, out, vocab_size=300)
    return out


class ComponentUnderTest:
    """One component (a registry name or a config) and the registries it is built from.

    ``registries`` defaults to mmfw's components plus every installed plugin plus ``plugins`` (modules with an
    ``mmfw_register_components`` hook, for testing a plugin that is not installed). LLM configs are built over
    ``tokenizer_dir`` (default: :func:`tiny_tokenizer_dir`). Partners of the whole-model checks are
    :data:`BASE_COMBO`, or ``partners`` (kind -> config or name) where given.
    """

    def __init__(self, kind: str, component: str | ComponentConfig, *, registries: Registries | None = None,
                 plugins: Sequence[Any] = (), tokenizer_dir: str | Path | None = None,
                 partners: dict[str, str | ComponentConfig] | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown component kind {kind!r}; valid: {', '.join(KINDS)}")
        self.kind = kind
        self.registries = registries if registries is not None else installed_registries(plugins)
        self._tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir is not None else None
        self.registry = getattr(self.registries, kind)
        self.name = component if isinstance(component, str) else component.type
        self.label = f"{self.registry.kind} {self.name!r}"
        self._given = None if isinstance(component, str) else component
        self._partners = dict(partners or {})
        self._cache: dict[str, Any] = {}
        self.entry = self.registry.entry(self.name)  # unknown name: lists the registered ones

    # -- what the checks use ------------------------------------------------------------------------------------------
    @property
    def tokenizer_dir(self) -> Path:
        return self._tokenizer_dir if self._tokenizer_dir is not None else tiny_tokenizer_dir()

    def example_config(self, kind: str | None = None, name: str | None = None) -> ComponentConfig:
        """The config under test (``kind``/``name`` unset), or the example config of another component."""
        kind, name = kind or self.kind, name or self.name
        if kind == self.kind and name == self.name and self._given is not None:
            return self._given
        cfg_cls = getattr(self.registries, kind).config_class(name)
        return cfg_cls.example(tokenizer=str(self.tokenizer_dir)) if kind == "llms" else cfg_cls.example()

    @property
    def config(self) -> ComponentConfig:
        if "config" not in self._cache:
            self._cache["config"] = self.run("config", lambda: self.example_config(),
                                             "the config class's example() must return a valid tiny config")
        return self._cache["config"]

    def partner_config(self, kind: str) -> ComponentConfig:
        """The config in slot ``kind`` of the whole model: the component itself, a given partner or the base one."""
        if kind == self.kind:
            return self.config
        given = self._partners.get(kind, BASE_COMBO[kind])
        return self.example_config(kind, given) if isinstance(given, str) else given

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def fail(self, what: str, fix: str) -> None:
        """Report a broken promise: ``what`` was observed, ``fix`` says what the component must do instead."""
        raise _Failure(f"{what}: {fix}")

    def not_applicable(self, reason: str) -> None:
        """The contract does not apply to this component (e.g. dynamic sizes for a fixed-size encoder)."""
        raise _NotApplicable(reason)

    def require(self, ok: Any, what: str, fix: str) -> None:
        if not ok:
            self.fail(what, fix)

    def run(self, step: str, fn: Callable[[], Any], fix: str) -> Any:
        """Call ``fn``; an exception from the component becomes a failure naming ``step`` and ``fix``."""
        try:
            return fn()
        except (_Failure, _NotApplicable):
            raise
        except Exception as e:
            raise _Failure(f"{step} raised {type(e).__name__}: {e}: {fix}") from e

    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The LLM's tokenizer (the LLM under test, or the partner LLM)."""
        def load() -> PreTrainedTokenizerBase:
            cfg = self.partner_config("llms")
            return self.registries.llms.get(cfg.type).load_tokenizer(cfg)
        return self.cached("tokenizer", lambda: self.run("load_tokenizer", load, "load_tokenizer(cfg) must return "
                                                         "the tokenizer of the config"))

    # -- running contracts --------------------------------------------------------------------------------------------
    def contracts(self) -> list[Contract]:
        return contracts(self.kind)

    def check(self, name: str) -> str | None:
        """Run contract ``name``: None when the component keeps it, the reason when the contract does not apply to
        it; raises :class:`ContractViolation` if the component breaks it."""
        found = [c for c in self.contracts() if c.name == name]
        if not found:
            raise ValueError(f"no contract {name!r} for {self.kind}; valid: "
                             + ", ".join(c.name for c in self.contracts()))
        try:
            found[0].check(self)
        except _NotApplicable as e:
            return f"{self.label}: {name} does not apply: {e}"
        except _Failure as e:
            raise ContractViolation(f"{self.label}: {name}: {e}") from e.__cause__
        except ContractViolation:
            raise
        except Exception as e:  # a component error outside a wrapped step
            raise ContractViolation(f"{self.label}: {name}: raised {type(e).__name__}: {e}") from e

    def check_all(self, only: Iterable[str] | None = None, skip: Iterable[str] = ()) -> list[str]:
        """Run every contract (or those in ``only``, minus ``skip``); one :class:`ContractViolation` lists every
        broken one. Returns the names of the contracts that were checked and kept (not those that do not apply)."""
        only = None if only is None else set(only)
        names = [c.name for c in self.contracts() if (only is None or c.name in only) and c.name not in set(skip)]
        if only is not None and (unknown := sorted(only - {c.name for c in self.contracts()})):
            raise ValueError(f"no contract(s) {unknown} for {self.kind}")
        passed, broken = [], []
        for name in names:
            try:
                if self.check(name) is None:
                    passed.append(name)
            except ContractViolation as e:
                broken.append(str(e))
        if broken:
            raise ContractViolation(f"{self.label} breaks {len(broken)} of {len(names)} contracts:\n"
                                    + "\n".join(f"- {b}" for b in broken), broken)
        return passed


def missing_grads(named_parameters: Iterable[tuple[str, torch.nn.Parameter]]) -> list[str]:
    """Names of trainable parameters that received no gradient (or a non-finite one)."""
    return [n for n, p in named_parameters
            if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]


def listing(names: Sequence[str], limit: int = 6) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
