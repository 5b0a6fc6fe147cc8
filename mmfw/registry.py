"""One generic registry: component names -> (class, config class, where it came from).

A :class:`Registry` holds one kind of component (vision encoders, connectors, ...). Names are looked up exactly; an
unknown name raises :class:`UnknownComponentError` listing the registered names with the closest match first;
registering a name twice raises :class:`DuplicateComponentError` naming both sources.

Components declare their own name and config class with the :func:`component` decorator, which only annotates the
class (no global state). Registries are filled by plugins through the ``mmfw_register_components`` hook (see
:mod:`mmfw.hookspecs`), built-ins included, and then passed to whatever needs them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from mmfw.errors import (  # noqa: F401  (re-exported: the registry's errors)
    DuplicateComponentError,
    PluginLoadError,
    RegistryError,
    UnknownComponentError,
    closest_first,
    format_choices,
)

T = TypeVar("T")


def component(name: str, *, config: type) -> Callable[[type[T]], type[T]]:
    """Class decorator declaring a component's registry name and config class.

    Only annotates the class (``cls.registry_name``, ``cls.config_class``); registration itself happens through a
    plugin hook. The config class declares ``type: Literal[name] = name`` itself; :meth:`Registry.register` checks that
    its default equals ``name``.
    """

    def wrap(cls: type[T]) -> type[T]:
        cls.registry_name = name  # type: ignore[attr-defined]
        cls.config_class = config  # type: ignore[attr-defined]
        return cls

    return wrap


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered component."""

    name: str
    obj: type[T]
    config: type
    source: str


class Registry(Generic[T]):
    """A named collection of components of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, obj: type[T], *, name: str | None = None, config: type | None = None,
                 source: str | None = None) -> type[T]:
        """Register ``obj`` (usually a class decorated with :func:`component`)."""
        name = name or getattr(obj, "registry_name", None)
        config = config or getattr(obj, "config_class", None)
        if not name or config is None:
            raise RegistryError(f"{obj!r} has no name/config; decorate it with @component(name, config=...)")
        cfg_type = getattr(config, "model_fields", {}).get("type")
        if cfg_type is None:
            raise RegistryError(f"{self.kind} {name!r}: config class {config.__name__} has no 'type' field; derive it "
                                "from mmfw's ComponentConfig and declare type: Literal[...]")
        if cfg_type.default != name:
            raise RegistryError(
                f"{self.kind} {name!r}: config class {config.__name__} has type={cfg_type.default!r}; they must match")
        source = source or f"{obj.__module__}.{obj.__qualname__}"
        if name in self._entries:
            raise DuplicateComponentError(
                f"{self.kind} {name!r} is registered twice: by {self._entries[name].source} and by {source}")
        self._entries[name] = Entry(name=name, obj=obj, config=config, source=source)
        return obj

    def get(self, name: str) -> type[T]:
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownComponentError(self.kind, name, list(self._entries)) from None

    def config_class(self, name: str) -> type:
        return self.entry(name).config

    def build(self, cfg: Any, /, **deps: Any) -> T:
        """Instantiate the component selected by ``cfg.type`` with its config and the given dependencies."""
        return self.get(cfg.type)(cfg, **deps)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
