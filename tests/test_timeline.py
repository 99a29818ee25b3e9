"""The denoising timeline (controlnet_core.timeline): x0 predictions drawn by a fitted linear decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from controlnet_core import Engine, GenerationRequest, Settings
from controlnet_core.timeline import fit_linear_decoder, timeline_steps
from tests.conftest import FAST


def test_timeline_steps_spread_over_the_run():
    assert timeline_steps(20) == [0, 4, 8, 11, 15, 19]
    assert timeline_steps(3) == [0, 1, 2]
    assert timeline_steps(1) == [0]


@pytest.fixture(scope="module")
def toy_engine() -> Engine:
    return Engine(Settings(backend="toy"))


def test_the_linear_decoder_draws_what_the_vae_decodes(toy_engine):
    """Fitted to the toy's VAE, the cheap decoder gives the colours the real one gives."""
    pipe = toy_engine.manager.base()
    decoder = fit_linear_decoder(pipe, seed=1)
    generator = torch.Generator().manual_seed(5)  # other colour fields than the fit's
    coarse = torch.rand((4, 3, 4, 4), generator=generator)
    size = 16 * pipe.vae_scale_factor
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic")
    images = images.clamp(0, 1)
    with torch.inference_mode():
        latents = pipe.vae.encode(images * 2 - 1).latents * pipe.vae.config.scaling_factor
    pooled = torch.nn.functional.avg_pool2d(images, pipe.vae_scale_factor)
    for latent, truth in zip(latents.numpy(), pooled.numpy(), strict=True):
        drawn = decoder.decode(latent).astype(np.float32) / 255
        # A linear map cannot follow the toy's small non-linear VAE closely (mean colour alone:
        # about 0.25 off); for SD1.5's VAE such maps are the usual cheap preview.
        assert np.abs(drawn - truth.transpose(1, 2, 0)).mean() < 0.16


def test_a_comparison_with_a_timeline_keeps_its_images(toy_engine, square_image):
    request = GenerationRequest(
        modality="canny", **{**FAST, "steps": 8, "resolution": 64, "seed": 2}
    )
    plain = toy_engine.compare(request, square_image)
    traced = toy_engine.compare(request, square_image, timeline=6)
    assert np.array_equal(plain.arrays, traced.arrays)
    assert [step for step, _ in traced.timeline] == timeline_steps(8)
    for _, images in traced.timeline:
        assert len(images) == 2 and images[0].shape == (64, 64, 3)  # the toy's own tiny VAE
    assert "tiny VAE" in toy_engine.preview_decoder().name
    # The last prediction is close to the final image; the first is far (still mostly noise).
    final = traced.arrays[1]
    last = traced.timeline[-1][1][1].astype(np.float32) / 255
    first = traced.timeline[0][1][1].astype(np.float32) / 255
    assert np.abs(last - final).mean() < 0.05 < np.abs(first - final).mean()
    # Plain SD and ControlNet start from the same noise but predict different images.
    assert not np.array_equal(traced.timeline[-1][1][0], traced.timeline[-1][1][1])


def test_a_full_vae_is_drawn_by_the_fitted_linear_map(tiny_engine, square_image):
    request = GenerationRequest(modality="canny", **{**FAST, "seed": 2})
    traced = tiny_engine.compare(request, square_image, timeline=6)
    assert "linear" in tiny_engine.preview_decoder().name
    assert [step for step, _ in traced.timeline] == timeline_steps(FAST["steps"])
    assert traced.timeline[0][1][0].shape == (8, 8, 3)  # one pixel per latent


def test_live_previews_show_the_image_forming_without_changing_it(toy_engine, square_image):
    """Every step but the last hands over each variant's x0 estimate (interval 0); the final
    images are those of a run without previews; the last preview is close to the final image."""
    request = GenerationRequest(
        modality="canny", **{**FAST, "steps": 6, "resolution": 64, "seed": 4}
    )
    plain = toy_engine.compare(request, square_image)
    shown = []
    toy_engine.preview_interval = 0.0
    try:
        previewed = toy_engine.compare(
            request, square_image, preview=lambda *update: shown.append(update)
        )
    finally:
        toy_engine.preview_interval = 1.0
    assert np.array_equal(plain.arrays, previewed.arrays)
    assert [(step, total) for step, total, _ in shown] == [(s, 6) for s in range(1, 6)]
    for _, _, images in shown:
        assert len(images) == 2 and images[0].shape == (64, 64, 3) and images[0].dtype == np.uint8
    # One implementation with the timeline: the previews are its frames of the same steps.
    traced = toy_engine.compare(request, square_image, timeline=6)
    frames = dict(traced.timeline)
    for step, _, images in shown:
        assert all(np.array_equal(a, b) for a, b in zip(images, frames[step - 1], strict=True))


def test_previews_are_rationed_by_the_clock(toy_engine, square_image, monkeypatch):
    """At most one preview per second of sampling (the default): with a clock that moves 0.4 s a
    reading, a 12-step run shows a preview every third reading; at a clock that barely moves, none:
    on fast hardware previews cost nothing."""
    from controlnet_core import timeline

    request = GenerationRequest(modality="canny", **{**FAST, "steps": 12, "resolution": 64})
    for tick, expected in ((0.4, [3, 6, 9]), (1e-6, [])):
        readings = iter(range(1000))
        monkeypatch.setattr(timeline, "clock", lambda r=readings, t=tick: next(r) * t)
        shown: list = []
        toy_engine.generate(
            request, square_image, preview=lambda *update, s=shown: s.append(update)
        )
        assert [step for step, _, _ in shown] == expected, tick
