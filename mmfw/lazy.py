"""Deferred imports for component modules.

Registering a component imports its module, and every config load needs every registered config class, so a
component module must not import heavy libraries (transformers model classes, timm, open_clip) at its top level:
they belong where the model is built. :class:`lazy_attr` covers the case of a class attribute that names such an
object: ``hf_model_class = lazy_attr("transformers:LlamaForCausalLM")`` imports transformers on first access only.
"""

from __future__ import annotations

import pkgutil
from typing import Any

_UNSET: Any = object()


class lazy_attr:
    """A class attribute whose value is ``"module:qualified.name"``, imported on first access and then cached."""

    def __init__(self, target: str) -> None:
        module, sep, name = target.partition(":")
        if not sep or not module or not name:
            raise ValueError(f"lazy_attr target must be 'module:name', got {target!r}")
        self.target = target
        self._value = _UNSET

    def resolve(self) -> Any:
        if self._value is _UNSET:
            self._value = pkgutil.resolve_name(self.target)
        return self._value

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        return self.resolve()

    def __repr__(self) -> str:
        return f"lazy_attr({self.target!r})"
