"""Recipes: the full, JSON-serialisable record of how an image was made.

A recipe holds every setting of a generation, the model ids and the library versions, so the same
image can be made again. `library_versions` is computed once per process.
"""

from __future__ import annotations

import platform
from functools import lru_cache
from importlib import metadata

RECIPE_FORMAT = "controlnet-demo-suite/recipe-v1"
_VERSIONED_PACKAGES = ("torch", "diffusers", "transformers", "controlnet-aux", "gradio", "numpy")


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """Versions of the libraries that decide the pixels (and Python's)."""
    versions = {"python": platform.python_version()}
    for package in _VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
