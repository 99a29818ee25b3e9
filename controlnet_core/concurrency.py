"""The one lock that every model construction in the process takes.

diffusers' and transformers' `from_pretrained` build models with process-wide patches: accelerate's
`init_empty_weights` swaps `nn.Module.register_parameter` so new parameters land on the "meta" device,
and the default dtype may be switched while a model is built. When two builds overlap in two threads,
the one that finishes last restores the *other's* patched state: every module built afterwards has no
real weights ("Cannot copy out of meta tensor"). So loads (ControlNets, base models, annotators, tiny
models) run one at a time; per-model locks elsewhere only stop the same model loading twice.

Downloads run outside the lock (into the hub cache first, then the model is built from the cache), so
one model's first download does not hold up the others; the lock covers building the model only.
"""

from __future__ import annotations

import threading

# Reentrant, so a loader that builds a second model (a pipeline and its parts) cannot deadlock itself.
model_construction_lock = threading.RLock()

_runtime_lock = threading.Lock()
_runtime_imported = False


def import_runtime() -> None:
    """Import torch and diffusers' pipelines once, one thread at a time.

    diffusers resolves its names lazily, and that is not safe from two threads at once: a thread
    importing `diffusers.pipelines` while another runs `from diffusers import
    StableDiffusionPipeline` makes the second fail with "cannot import name" about 1 time in 3.
    The server imports them in the background once its page answers, so every first use of a model
    or a detector comes through here first and waits for that import instead of racing it.
    """
    global _runtime_imported
    if _runtime_imported:
        return
    with _runtime_lock:
        if not _runtime_imported:
            import diffusers
            import diffusers.pipelines  # noqa: F401
            import torch  # noqa: F401

            diffusers.StableDiffusionPipeline  # noqa: B018  (resolves the lazy names it needs)
            diffusers.ControlNetModel  # noqa: B018
            _runtime_imported = True
