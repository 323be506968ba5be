"""Modules loaded on first use, so that an entry point's `--help` (and its flag definitions)
never loads TensorFlow. A program that runs loads them as soon as `main` touches them."""

from __future__ import annotations

import importlib.util
import sys
import types


def lazy_module(name: str) -> types.ModuleType:
    """The module `name`, executed on its first attribute access (importlib's LazyLoader);
    the module itself if it is already loaded."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
