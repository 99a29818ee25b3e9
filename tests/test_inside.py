"""What the ControlNet adds inside the UNet (controlnet_core.inside), recorded during a generation."""

from __future__ import annotations

import numpy as np
import pytest

from controlnet_core import GenerationRequest
from controlnet_core.inside import ResidualProbe
from tests.conftest import FAST


def request(**overrides) -> GenerationRequest:
    return GenerationRequest(modality="canny", **{**FAST, "seed": 4, **overrides})


def test_recording_does_not_change_the_image(tiny_engine, square_image):
    plain = tiny_engine.generate(request(), square_image)
    seen = tiny_engine.generate(request(), square_image, inside_step="mean")
    assert np.array_equal(plain.arrays, seen.arrays)
    assert plain.inside is None and seen.inside is not None


def test_every_injection_point_is_recorded_with_its_shape(tiny_engine, square_image):
    result = tiny_engine.generate(request(), square_image, inside_step="middle")
    unet = tiny_engine.manager.base().unet
    points = result.inside.points
    # One per skip connection of the UNet (conv_in, then every down block's outputs) + the middle.
    skips = 1 + sum(len(b.resnets) + (1 if b.downsamplers else 0) for b in unet.down_blocks)
    assert len(points) == skips + 1
    assert points[0].name == "conv_in" and points[-1].name == "mid_block"
    assert result.inside.steps == [FAST["steps"] // 2]
    for point in points:
        assert point.heat.shape == (point.height, point.width)
        assert point.residual_norm > 0 and point.skip_norm > 0
        assert float(point.heat.min()) >= 0.0


def test_strength_zero_and_outside_the_window_record_exact_zeros(tiny_engine, square_image):
    off = tiny_engine.generate(request(conditioning_scale=0.0), square_image, inside_step="mean")
    assert all(p.residual_norm == 0.0 and not p.heat.any() for p in off.inside.points)
    late = tiny_engine.generate(
        request(guidance_start=0.5), square_image, inside_step="first"
    )  # step 0 is outside a window that starts half-way
    assert all(p.residual_norm == 0.0 for p in late.inside.points)


def test_strength_and_soft_weights_scale_the_recorded_residuals(tiny_engine, square_image):
    def norms(**overrides):
        result = tiny_engine.generate(request(**overrides), square_image, inside_step="first")
        return np.array([p.residual_norm for p in result.inside.points])

    full, half = norms(), norms(conditioning_scale=0.5)
    # At the first step the latents do not depend on the strength yet: exactly proportional.
    np.testing.assert_allclose(half, 0.5 * full, rtol=1e-4)
    soft = norms(control_mode="prompt")
    ratio = soft / full
    assert ratio[0] < ratio[-1] == pytest.approx(1.0, rel=1e-4)  # shallow blocks weakened most
    assert np.all(np.diff(ratio) > 0)


def test_a_comparison_records_its_controlled_half(tiny_engine, square_image):
    result = tiny_engine.compare(request(), square_image, inside_step="last")
    assert result.inside.variant == 1
    assert any(p.residual_norm > 0 for p in result.inside.points)


def test_an_unknown_step_choice_is_a_field_error():
    from controlnet_core import FieldError

    with pytest.raises(FieldError, match="inside_step must be one of"):
        ResidualProbe("sometimes")


def test_another_threads_unet_call_passes_the_hooks_by(tiny_engine):
    """The UNet is shared by every request: while one run's hooks are on, a call on another
    thread (one row, where the watched row is 3) runs untouched and adds nothing to the record."""
    import threading

    import torch

    unet = tiny_engine.manager.base().unet
    width = unet.config.cross_attention_dim

    def call(rows: int) -> None:
        sample = torch.randn(rows, 4, 8, 8, generator=torch.Generator().manual_seed(rows))
        with torch.inference_mode():
            unet(sample, torch.tensor(500), encoder_hidden_states=torch.zeros(rows, 77, width))

    probe = ResidualProbe()
    errors: list[BaseException] = []

    def other() -> None:
        try:
            call(1)
        except BaseException as error:  # surfaced below
            errors.append(error)

    with probe.watching(unet, row=3, wanted=True):
        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
        assert not errors and not probe._skips
        call(4)
    skips = 1 + sum(len(b.resnets) + (1 if b.downsamplers else 0) for b in unet.down_blocks)
    assert len(probe._skips) == skips + 1  # one call's: conv_in, the down blocks', the middle
