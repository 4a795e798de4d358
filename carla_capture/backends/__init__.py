"""Capture backends, chosen by name from an explicit registry.

Backends are imported only when chosen, so the ``carla`` client module is needed only by
the CARLA backend.
"""

from __future__ import annotations

import importlib

from carla_capture.backends.base import Backend
from clipcore.errors import ConfigError

#: name -> "module:Class"
BACKENDS: dict[str, str] = {
    "synthetic": "carla_capture.backends.synthetic:SyntheticBackend",
    "carla": "carla_capture.backends.carla:CarlaBackend",
}


def get_backend(name: str) -> type[Backend]:
    """The backend class registered under ``name``."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of: {', '.join(sorted(BACKENDS))}")
    module, _, attr = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), attr)
