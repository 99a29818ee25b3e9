"""What a ControlNet adds inside the UNet: its residual at every injection point, next to the UNet's
own skip activation there.

ControlNet's outputs are added to the frozen UNet's skip connections (the 12 down-block outputs of
SD1.5, from `conv_in` on) and to its middle block. A `ResidualProbe` passed to `sampling.sample`
records, for one row of the batch (one variant, the conditional half of CFG, where every control
mode acts) and at the chosen denoising step(s):

- per injection point, the residual's magnitude per spatial location (mean |r| over channels),
- its norm, and the norm of the UNet's own skip activation at that point before the residual is
  added (read by forward hooks on `conv_in`, each down block and the middle block).

It only reads tensors the loop computes anyway, so the image is the same, bit for bit, with or
without it; at strength 0 (or outside start/end) every recorded residual is exactly 0.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from controlnet_core.errors import FieldError, shown

if TYPE_CHECKING:  # torch loads with the first generation, not with the package
    import torch

INSIDE_STEPS = ("first", "middle", "last", "mean")


@dataclass
class InjectionPoint:
    """One place where the ControlNet's residual enters the UNet, as recorded."""

    name: str  # "conv_in", "down_blocks.1.2", "mid_block"
    channels: int
    height: int
    width: int
    heat: np.ndarray  # (height, width) float32: mean |residual| over channels
    residual_norm: float
    skip_norm: float  # the UNet's own activation there, before the residual is added

    @property
    def relative(self) -> float:
        """How much the ControlNet changes what the decoder sees here: |residual| / |skip|."""
        return self.residual_norm / self.skip_norm if self.skip_norm > 0 else 0.0


@dataclass
class ResidualRecord:
    """The injection points, in UNet order, and the denoising steps they were averaged over."""

    points: list[InjectionPoint]
    steps: list[int]
    variant: int


@dataclass
class ResidualProbe:
    """Records residuals and skip activations of variant `variant` at `when` (see INSIDE_STEPS)."""

    when: str = "middle"
    variant: int = 0
    _names: list[str] = field(default_factory=list, init=False)
    _skips: list[torch.Tensor] = field(default_factory=list, init=False)
    _sums: dict[str, list] = field(default_factory=dict, init=False)
    _steps: list[int] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.when not in INSIDE_STEPS:
            raise FieldError(
                ("inside_step",), f"must be one of {list(INSIDE_STEPS)}; got {shown(self.when)}"
            )

    def wants(self, index: int, total: int) -> bool:
        if self.when == "mean":
            return True
        return index == {"first": 0, "middle": total // 2, "last": total - 1}[self.when]

    @contextmanager
    def watching(self, unet: torch.nn.Module, row: int, wanted: bool) -> Iterator[None]:
        """Hooks that keep row `row` of the UNet's skip activations during one UNet call.

        The UNet is shared: another request's call on another thread while the hooks are on
        passes them by (they would read its rows, or a row its batch does not have)."""
        self._skips, self._names = [], []
        if not wanted:
            yield
            return
        owner = threading.get_ident()

        def keep(name_of):
            def hook(module, inputs, output):
                if threading.get_ident() != owner:
                    return
                if isinstance(output, tuple):  # a down block: (hidden, its skip outputs)
                    for j, skip in enumerate(output[1]):
                        self._names.append(name_of(j))
                        self._skips.append(skip[row].detach().float())
                else:
                    self._names.append(name_of(0))
                    self._skips.append(output[row].detach().float())

            return hook

        handles = [unet.conv_in.register_forward_hook(keep(lambda j: "conv_in"))]
        for i, block in enumerate(unet.down_blocks):
            handles.append(block.register_forward_hook(keep(lambda j, i=i: f"down_blocks.{i}.{j}")))
        handles.append(unet.mid_block.register_forward_hook(keep(lambda j: "mid_block")))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def record(
        self,
        index: int,
        row: int,
        down: list[torch.Tensor] | None,
        mid: torch.Tensor | None,
    ) -> None:
        """Add step `index`: the summed residuals (None: no ControlNet acted) and the skips."""
        import torch

        if not self._skips:
            return
        residuals = [*(down or [None] * (len(self._skips) - 1)), mid]
        for name, skip, residual in zip(self._names, self._skips, residuals, strict=True):
            if residual is None:
                heat = torch.zeros(skip.shape[1:])
                norm = 0.0
            else:
                r = residual[row].detach().float()
                heat, norm = r.abs().mean(dim=0), float(r.norm())
            entry = self._sums.setdefault(name, [0, None, 0.0, 0.0, tuple(skip.shape)])
            entry[0] += 1
            entry[1] = heat.cpu() if entry[1] is None else entry[1] + heat.cpu()
            entry[2] += norm
            entry[3] += float(skip.norm())
        self._steps.append(index)
        self._skips = []

    def result(self) -> ResidualRecord:
        points = []
        for name, (count, heat, residual, skip, shape) in self._sums.items():
            points.append(
                InjectionPoint(
                    name=name,
                    channels=shape[0],
                    height=shape[1],
                    width=shape[2],
                    heat=(heat / count).numpy().astype(np.float32),
                    residual_norm=residual / count,
                    skip_norm=skip / count,
                )
            )
        return ResidualRecord(points, list(self._steps), self.variant)
