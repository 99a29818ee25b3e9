"""The one lock that every model construction in the process takes.

diffusers' and transformers' `from_pretrained` build models with process-wide patches: accelerate's
`init_empty_weights` swaps `nn.Module.register_parameter` so new parameters land on the "meta" device,
and the default dtype may be switched while a model is built. When two builds overlap in two threads,
the one that finishes last restores the *other's* patched state: every module built afterwards has no
real weights ("Cannot copy out of meta tensor"). So loads (ControlNets, base models, annotators, tiny
models) run one at a time; per-model locks elsewhere only stop the same model loading twice.
"""

from __future__ import annotations

import threading

# Reentrant: loading a ControlNet may first load the base model in the same thread.
model_construction_lock = threading.RLock()
