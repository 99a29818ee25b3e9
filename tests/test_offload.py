"""`--offload`: models wait in CPU memory and each stage of a run moves its own to the device.

On this machine the device is the CPU, so moving costs nothing; what is tested is which models each
stage moves, that runs take turns, and that the images are those of a run without offload.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from controlnet_core import Engine, GenerationRequest, Settings
from controlnet_core.offload import Offloader
from controlnet_core.settings import SettingError, settings_from_cli
from tests.conftest import FAST

TEXT, UNET, VAE = ("CLIPTextModel",), "UNet2DConditionModel", ("AutoencoderKL",)


class Placed(torch.nn.Module):
    """A module that records where it is sent."""

    def __init__(self, name: str, moves: list) -> None:
        super().__init__()
        self.name, self.moves = name, moves

    def to(self, device):  # noqa: D102 - records instead of moving
        self.moves.append((self.name, str(device)))
        if self.name == "too big" and str(device) != "cpu":
            raise torch.OutOfMemoryError("CUDA out of memory")
        return self


def test_a_stage_moves_its_models_in_and_the_previous_stages_out():
    moves: list = []
    text, unet, controlnet, vae = (Placed(n, moves) for n in ("text", "unet", "cn", "vae"))
    offload = Offloader("cpu")
    with offload.running():
        offload.use(text)
        offload.use(unet, controlnet, None)
        offload.use(unet, vae)  # a model in two stages in a row is not moved out between them
    assert moves == [
        ("text", "cpu"),
        ("text", "cpu"),  # out, then the next stage in
        ("unet", "cpu"),
        ("cn", "cpu"),
        ("cn", "cpu"),  # out: not in the next stage
        ("unet", "cpu"),
        ("vae", "cpu"),
        ("unet", "cpu"),  # parked when the run ends
        ("vae", "cpu"),
    ]


def test_a_stage_that_fails_to_move_in_leaves_nothing_on_the_device():
    """Out of memory half-way through a stage: what moved in so far goes back to the CPU when the
    run ends, instead of staying resident (and making every later run fail too)."""
    moves: list = []
    unet, controlnet = Placed("unet", moves), Placed("too big", moves)
    offload = Offloader("meta")
    with pytest.raises(torch.OutOfMemoryError), offload.running():
        offload.use(unet, controlnet)
    assert moves == [("unet", "meta"), ("too big", "meta"), ("unet", "cpu"), ("too big", "cpu")]
    assert offload._on_device == []


def test_offloaded_runs_move_each_stage_and_give_the_same_images(square_image):
    request = GenerationRequest(modality="canny", **FAST)
    plain = Engine(Settings(backend="tiny"))
    engine = Engine(Settings(backend="tiny", offload=True))
    expected = plain.compare(request, square_image, timeline=2)
    result = engine.compare(request, square_image, timeline=2)
    np.testing.assert_array_equal(result.arrays, expected.arrays)
    offload = engine.manager.offloader
    # The timeline's decoder is fitted first, on the VAE alone; then the run's three stages.
    assert list(offload.stages) == [VAE, TEXT, (UNET, "ControlNetModel"), VAE]
    assert offload._on_device == []  # every model back in CPU memory


def test_offloaded_runs_take_turns(square_image):
    """Two requests at once: one run's stages never interleave with the other's (a run moving
    the UNet out while another is denoising on it would fail)."""
    engine = Engine(Settings(backend="tiny", offload=True))
    request = GenerationRequest(modality="canny", **FAST)
    engine.generate(request, square_image)  # models loaded before the race
    engine.manager.offloader.stages.clear()
    barrier = threading.Barrier(2)
    errors: list = []

    def run() -> None:
        barrier.wait()
        try:
            engine.generate(request, square_image)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    run_stages = [TEXT, (UNET, "ControlNetModel"), VAE]
    assert list(engine.manager.offloader.stages) == run_stages * 2


def test_offload_is_refused_with_compile_and_read_from_the_command_line():
    with pytest.raises(SettingError, match="offload cannot be combined with compile"):
        Settings(offload=True, compile=True)
    assert settings_from_cli(["--offload"], environ={}).offload
    assert settings_from_cli([], environ={"CONTROLNET_OFFLOAD": "1"}).offload
    assert Engine(Settings(backend="toy", offload=True)).manager.offloader is None


def test_a_run_cannot_hold_the_device_twice():
    """Holding the device again within a run of the same thread would park, at its end, the
    models the run is using: it is an error, not a silent park (other threads wait instead)."""
    offload = Offloader("cpu")
    with offload.running(), pytest.raises(RuntimeError, match="within a run"), offload.running():
        pass
    with offload.running():  # released: usable again
        pass
