"""mmfw: a modular plugin-registry framework for vision-language models."""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("mmfw")
"""Decorator for plugin hook implementations (see :mod:`mmfw.hookspecs`)."""

__all__ = ["__version__", "hookimpl"]
