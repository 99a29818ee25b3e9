"""The compiled path (`--compile`, controlnet_core.compiled) on the tiny models, on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from controlnet_core import Engine, GenerationRequest, Settings
from controlnet_core.compiled import BATCH_BUCKETS, Compiled, bucket
from controlnet_core.tiny import tiny_pipeline
from tests.conftest import FAST


def test_batches_are_padded_to_a_few_sizes():
    assert [bucket(rows) for rows in (1, 2, 3, 5, 6, 8, 9, 32)] == [1, 2, 4, 8, 8, 8, 16, 32]
    assert bucket(40) == 40  # beyond the largest bucket: as it is
    assert tuple(sorted(BATCH_BUCKETS)) == BATCH_BUCKETS


def test_a_padded_call_gives_each_row_what_an_unpadded_one_gives():
    """Padding rows copy the last row and are cut off again: 3 rows through the 4-row graph equal
    3 rows through the model (dynamo's eager backend: the padding, not Inductor, is tested here)."""
    unet = tiny_pipeline().unet
    sample = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(3, 77, unet.config.cross_attention_dim)
    with torch.inference_mode():
        expected = unet(sample, torch.tensor(500), encoder_hidden_states=text).sample
        compiled = Compiled(unet, backend="eager")
        got = compiled(sample, torch.tensor(500), encoder_hidden_states=text, return_dict=False)[0]
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_few_step_mode_on_a_compiled_base_fuses_the_lora_into_the_attention(square_image):
    """Compiled models fuse their QKV projections; the few-step copy is unfused before its LoRA
    goes into to_q/to_k/to_v, so its images equal those of the uncompiled path."""
    request = GenerationRequest(
        modality="canny", **{**FAST, "scheduler": "LCM", "steps": 3, "guidance_scale": 1.0}
    )
    plain = Engine(Settings(backend="tiny")).generate(request, square_image)
    engine = Engine(Settings(backend="tiny"))
    base = engine.manager.base()
    base.unet = Compiled(base.unet, backend="eager")  # what --compile does, without Inductor
    fused = engine.generate(request, square_image)
    np.testing.assert_allclose(fused.arrays, plain.arrays, atol=1e-4)


@pytest.mark.slow
def test_compiled_images_equal_eager_ones_and_another_image_count_does_not_recompile(
    square_image,
):
    """Inductor on the CPU: the same images as the eager path (within float noise), and once 3
    images (6 rows, padded to 8) have compiled, 4 images (8 rows) reuse those graphs. Once a
    second size has compiled (its sides dynamic), a third reuses its graphs, with Inductor's
    dynamic-shape kernels giving the eager images too."""
    from torch._dynamo.utils import counters

    eager = Engine(Settings(backend="tiny"))
    compiled = Engine(Settings(backend="tiny", compile=True))
    three = GenerationRequest(modality="canny", **{**FAST, "num_images": 3, "seed": 2})
    four = GenerationRequest(modality="canny", **{**FAST, "num_images": 4, "seed": 2})
    result = compiled.generate(three, square_image)
    np.testing.assert_allclose(result.arrays, eager.generate(three, square_image).arrays, atol=1e-3)
    graphs = counters["stats"]["unique_graphs"]
    result = compiled.generate(four, square_image)
    assert counters["stats"]["unique_graphs"] == graphs, "4 images compiled again"
    np.testing.assert_allclose(result.arrays, eager.generate(four, square_image).arrays, atol=1e-3)

    one = GenerationRequest(modality="canny", **{**FAST, "seed": 2})
    for width, height in ((128, 64), (64, 128)):  # 128x64 compiles, then 64x128 reuses it
        graphs = counters["stats"]["unique_graphs"]
        image = shapes_image(width, height)
        result = compiled.generate(one, image)
        np.testing.assert_allclose(result.arrays, eager.generate(one, image).arrays, atol=1e-3)
    assert counters["stats"]["unique_graphs"] == graphs, "a third size compiled again"


def shapes_image(width: int, height: int) -> np.ndarray:
    """A white `width`x`height` image with a black rectangle in its middle."""
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    image[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 0
    return image


def test_the_first_other_size_compiles_once_for_every_size_after_it(monkeypatch):
    """`--compile`: the warm-up's size keeps its own graphs; the first request at another size
    compiles the UNet and ControlNet once more, with dynamic sides, and every size after it
    (another aspect ratio, another resolution) runs on those graphs. Images equal the uncompiled
    path's (dynamo's eager backend: the graphs and their guards, not Inductor's kernels)."""
    from torch._dynamo.utils import counters

    import controlnet_core.compiled as compiled_module

    class EagerBackend(compiled_module.Compiled):
        def __init__(self, model, backend="eager"):
            super().__init__(model, backend)

    monkeypatch.setattr(compiled_module, "Compiled", EagerBackend)
    torch._dynamo.reset()
    counters.clear()
    try:
        compiled = Engine(Settings(backend="tiny", compile=True))
        eager = Engine(Settings(backend="tiny"))

        def generate(width: int, height: int, resolution: int = 64) -> int:
            """The graphs compiled so far, after a request (checked against the eager path)."""
            request = GenerationRequest(modality="canny", **{**FAST, "resolution": resolution})
            image = shapes_image(width, height)
            result = compiled.generate(request, image)
            expected = eager.generate(request, image)
            assert result.arrays.shape == expected.arrays.shape
            np.testing.assert_allclose(result.arrays, expected.arrays, atol=1e-4)
            return counters["stats"]["unique_graphs"]

        warmed = generate(64, 64)  # the warm-up's size (64² on the tiny backend)
        assert compiled.manager.base().unet.static_size == (8, 8)
        other = generate(128, 64)  # 128x64: the first other size
        assert other > warmed
        assert generate(64, 128) == other  # portrait
        assert generate(96, 72, resolution=128) == other  # 4:3 at another resolution: 192x128
        assert generate(64, 64) == other  # back at the warm-up's size
    finally:
        torch._dynamo.reset()


def test_graph_calls_from_many_threads_run_on_one(square_image):
    """CUDA graphs are kept per thread by torch: every compiled call made by any request thread
    runs on the one graph thread, and gets its own rows back."""
    import threading

    unet = tiny_pipeline().unet
    compiled = Compiled(unet, backend="eager")
    compiled.graphs = True  # the CUDA path's hand-over, without a GPU
    replay, threads = compiled._replay, set()

    def recording(*args, **kwargs):
        threads.add(threading.current_thread().name)
        return replay(*args, **kwargs)

    compiled._replay = recording
    text = torch.randn(2, 77, unet.config.cross_attention_dim)
    results, errors = {}, []

    def call(seed: int) -> None:
        try:
            sample = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
            with torch.inference_mode():
                got = compiled(sample, torch.tensor(500), text, return_dict=False)[0]
                expected = unet(sample, torch.tensor(500), encoder_hidden_states=text).sample
            results[seed] = torch.allclose(got, expected, atol=1e-5, rtol=1e-4)
        except Exception as error:  # surfaced below
            errors.append(error)

    workers = [threading.Thread(target=call, args=(seed,)) for seed in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors and results == {0: True, 1: True, 2: True}
    assert len(threads) == 1 and next(iter(threads)).startswith("cuda-graphs")
