"""Model offload for small GPUs (`--offload`): models live in CPU memory and each stage of a run
moves only what it needs onto the GPU.

A run has three stages: the text encoder(s), then the denoising loop (the UNet and the request's
ControlNets, which every step calls), then the VAE (and the safety checker). `Offloader.use` moves
one stage's models in and the previous stage's out, so the GPU holds the largest stage plus
activations instead of every model the server keeps: SDXL's UNet (5.1 GB in float16) with one
ControlNet (2.5 GB) rather than those plus both text encoders (1.6 GB) and every cached ControlNet.
This is what diffusers' `enable_model_cpu_offload` does, made explicit: the sampler calls the
models itself, from several request threads, so runs that move shared models take one lock
(`Offloader.running`) and run one at a time.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported when a run needs it, not when the page is built
    import torch


class Offloader:
    """Moves stages of models between the CPU and `device` (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        import torch

        self.device = torch.device(device)
        self._lock = threading.Lock()
        self._holder: int | None = None  # the thread whose run holds the device
        self._on_device: list[torch.nn.Module] = []
        # The last stages used, by model class: what a run moved, for tests and logs.
        self.stages: deque[tuple[str, ...]] = deque(maxlen=32)

    @contextmanager
    def running(self) -> Iterator[Offloader]:
        """Hold the device for one run; every model is back in CPU memory when it ends. Not
        within a run of the same thread: its end would park the models that run is using."""
        if self._holder == threading.get_ident():
            raise RuntimeError("Offloader.running() within a run of the same thread")
        with self._lock:
            self._holder = threading.get_ident()
            try:
                yield self
            finally:
                self._holder = None
                self.park()

    def use(self, *models: torch.nn.Module | None) -> None:
        """Move `models` to the device and the models of the previous stage back to the CPU."""
        wanted: list[torch.nn.Module] = []
        for model in models:  # once each: units of one union ControlNet share it
            if model is not None and all(model is not other for other in wanted):
                wanted.append(model)
        for model in list(self._on_device):
            if all(model is not other for other in wanted):
                model.to("cpu")
                self._on_device.remove(model)
        self._free_cache()
        for model in wanted:
            # Counted as on the device before it moves: a move that fails half-way (out of
            # memory) still leaves it for `park` to bring back, not resident for good.
            if all(model is not other for other in self._on_device):
                self._on_device.append(model)
            model.to(self.device)
        self.stages.append(tuple(type(model).__name__ for model in wanted))

    def park(self) -> None:
        """Every model of the last stage back to the CPU."""
        while self._on_device:
            self._on_device.pop(0).to("cpu")
        self._free_cache()

    def _free_cache(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()
