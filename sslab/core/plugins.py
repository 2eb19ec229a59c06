"""Plugin discovery: import every module of the plugin packages so their registrations run."""
from __future__ import annotations

import importlib
import pkgutil
from typing import List

PLUGIN_PACKAGES = (
    "sslab.encoders",
    "sslab.objectives",
    "sslab.datasets",
    "sslab.modalities",
    "sslab.eval",
    "sslab.commands",
    "sslab.importers",
    "sslab.pipelines",
)

_loaded = False
_loading = False


def load_all() -> List[str]:
    """Import all plugin modules once (idempotent). Returns the module names imported."""
    global _loaded, _loading
    if _loaded or _loading:
        return []
    _loading = True
    names: List[str] = []
    try:
        for pkg_name in PLUGIN_PACKAGES:
            pkg = importlib.import_module(pkg_name)
            for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg_name + "."):
                importlib.import_module(info.name)
                names.append(info.name)
        _loaded = True
    finally:
        _loading = False
    return names
