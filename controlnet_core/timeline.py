"""The denoising timeline: what the model predicts the final image to be (x0) at a few steps.

At each step the sampler knows the noisy latents and the (guided) noise prediction, from which the
predicted clean latents follow: x0 = (x_t − √(1−ᾱ_t)·ε) / √ᾱ_t (epsilon models; v-prediction has its
own formula). Decoding every x0 with the full VAE would cost more than the run on a CPU, so the strip
is drawn by a `LinearDecoder`: one linear map from the latent channels to RGB, fitted once to the base
model's own VAE (least squares between VAE-encoded colour fields and their 8×8-pooled pixels), or by
the VAE itself when it is a tiny one (TAESD's class, as the toy model's). The final images stay
decoded by the real VAE.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

DEFAULT_TIMELINE_STEPS = 6


@dataclass(frozen=True)
class LinearDecoder:
    """Latents (as the sampler holds them, scaled) → RGB in [0, 255] by one linear map."""

    weight: np.ndarray  # (channels, 3)
    bias: np.ndarray  # (3,)
    name: str = "a linear latent→RGB map fitted to this model's VAE"

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """(channels, h, w) latents → (h, w, 3) uint8."""
        rgb = np.tensordot(latents.astype(np.float32), self.weight, axes=([0], [0])) + self.bias
        return (rgb.clip(0.0, 1.0) * 255).round().astype(np.uint8)


class TinyVAEDecoder:
    """The base model's own VAE when it is a tiny one (TAESD's class): as cheap as a preview needs
    and exact, so the strip needs no approximation."""

    name = "this model's own tiny VAE (TAESD class)"

    def __init__(self, vae) -> None:
        self.vae = vae

    def decode(self, latents: np.ndarray) -> np.ndarray:
        import torch

        parameter = next(self.vae.parameters())
        tensor = torch.from_numpy(latents[None]).to(parameter.device, parameter.dtype)
        with torch.inference_mode():
            image = self.vae.decode(tensor / self.vae.config.scaling_factor).sample[0]
        image = (image.float().clamp(-1, 1) * 0.5 + 0.5).permute(1, 2, 0).cpu().numpy()
        return (image * 255).round().astype(np.uint8)


def preview_decoder(pipe) -> LinearDecoder | TinyVAEDecoder:
    """The cheapest faithful way to draw `pipe`'s latents: its VAE if tiny, else a fitted map."""
    if type(pipe.vae).__name__ == "AutoencoderTiny":
        return TinyVAEDecoder(pipe.vae)
    return fit_linear_decoder(pipe)


def fit_linear_decoder(pipe, samples: int = 12, seed: int = 0) -> LinearDecoder:
    """A `LinearDecoder` for `pipe`'s VAE, fitted on smooth random colour fields it encodes."""
    import torch
    import torch.nn.functional as F

    vae, factor = pipe.vae, pipe.vae_scale_factor
    size = 16 * factor  # 16×16 latents per sample
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand((samples, 3, 4, 4), generator=generator)
    images = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    images = images.clamp(0.0, 1.0)
    parameter = next(vae.parameters())
    with torch.inference_mode():
        encoded = vae.encode((images * 2 - 1).to(parameter.device, parameter.dtype))
        latents = getattr(encoded, "latent_dist", None)
        latents = latents.mean if latents is not None else encoded.latents
        latents = latents.float().cpu() * vae.config.scaling_factor
    pooled = F.avg_pool2d(images, factor)  # (N, 3, 16, 16): what each latent pixel shows
    inputs = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).numpy()
    targets = pooled.permute(0, 2, 3, 1).reshape(-1, 3).numpy()
    design = np.concatenate([inputs, np.ones((len(inputs), 1), np.float32)], axis=1)
    solution, *_ = np.linalg.lstsq(design, targets, rcond=None)
    return LinearDecoder(solution[:-1].astype(np.float32), solution[-1].astype(np.float32))


def timeline_steps(total: int, count: int = DEFAULT_TIMELINE_STEPS) -> list[int]:
    """About `count` step indices spread over a run of `total` steps, the first and last included."""
    return sorted({int(round(i)) for i in np.linspace(0, total - 1, min(count, total))})


def predicted_x0(scaled: torch.Tensor, noise: torch.Tensor, scheduler, t) -> np.ndarray:
    """The predicted final latents (x0) of every row, from a step's model input (`scaled`, in x_t
    form for every scheduler) and its guided noise prediction, as float32 numpy (B, C, h, w)."""
    alphas = scheduler.alphas_cumprod
    position = min(max(int(round(float(t))), 0), len(alphas) - 1)
    alpha = float(alphas[position])
    x_t, out = scaled.float(), noise.float()
    if scheduler.config.get("prediction_type", "epsilon") == "v_prediction":
        x0 = alpha**0.5 * x_t - (1 - alpha) ** 0.5 * out
    else:
        x0 = (x_t - (1 - alpha) ** 0.5 * out) / alpha**0.5
    return x0.cpu().numpy()


@dataclass
class Timeline:
    """Collects x0 predictions (all variants) at the chosen steps of one `sampling.sample` call."""

    count: int = DEFAULT_TIMELINE_STEPS
    frames: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (step, (B, C, h, w))
    total: int = 0

    def wants(self, index: int, total: int) -> bool:
        self.total = total
        return index in timeline_steps(total, self.count)

    def record(self, index: int, scaled: torch.Tensor, noise: torch.Tensor, scheduler, t) -> None:
        self.frames.append((index, predicted_x0(scaled, noise, scheduler, t)))

    def images(self, decoder) -> list[tuple[int, list[np.ndarray]]]:
        """(step index, one RGB image per variant) for every recorded step."""
        return [(step, [decoder.decode(x) for x in x0]) for step, x0 in self.frames]


# (steps done, total steps, one RGB image per variant at the latents' size)
PreviewCallback = Callable[[int, int, list[np.ndarray]], None]

DEFAULT_PREVIEW_INTERVAL = 1.0
clock = time.monotonic  # the previews' clock (a test sets its own)


class LivePreview:
    """Shows the image forming while a run samples: the x0 estimate of every variant, drawn by the
    same cheap decoder as the timeline, handed to `callback` at most once per `interval` seconds
    of sampling (never for the last step, whose image the full VAE decodes next). Timing by the
    clock rather than by a step count bounds the cost on any hardware: on a fast GPU a run
    shows no previews at all; on a CPU, one every second or so."""

    def __init__(
        self,
        decoder: Callable[[], LinearDecoder | TinyVAEDecoder],
        callback: PreviewCallback,
        interval: float = DEFAULT_PREVIEW_INTERVAL,
    ) -> None:
        # The decoder is asked for at the first preview: fitting one takes a moment, and a run
        # too short for any preview should not pay it.
        self.decoder, self.callback, self.interval = decoder, callback, interval
        self.shown = 0
        self._last = clock()

    def wants(self, index: int, total: int) -> bool:
        return index < total - 1 and clock() - self._last >= self.interval

    def record(self, index: int, total: int, scaled, noise, scheduler, t) -> None:
        x0 = predicted_x0(scaled, noise, scheduler, t)
        decoder = self.decoder()
        self.callback(index + 1, total, [decoder.decode(x) for x in x0])
        self.shown += 1
        self._last = clock()
