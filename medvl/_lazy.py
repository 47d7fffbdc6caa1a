"""Lazy package attributes: a name is imported from its module on first use.

``medvl.model``, ``medvl.train`` and ``medvl.eval`` export names whose modules import torch and
transformers (seconds); ``medvl --help`` and ``medvl info`` should not pay for them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, modules: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package`` that imports ``name`` from
    ``modules[name]`` when it is first asked for (PEP 562)."""

    def __getattr__(name: str) -> Any:
        if name in modules:
            return getattr(importlib.import_module(modules[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
