"""Model manager: caching, concurrency, the real loading code on locally saved models, settings."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from controlnet_core import Engine, GenerationRequest
from controlnet_core.modalities import get_modality
from controlnet_core.models import ModelManager, pick_device, pick_dtype, resolve_backend
from controlnet_core.preprocessors import WeightsUnavailableError
from controlnet_core.settings import Settings, settings_from_cli, settings_from_env
from controlnet_core.tiny import tiny_controlnet, tiny_pipeline
from demos.texts import backend_note
from tests.conftest import FAST, Arrivals, ReportingLock


def test_base_and_controlnets_load_once_and_are_cached():
    manager = ModelManager(Settings(backend="tiny"))
    assert manager.loads == {}  # nothing loads at construction
    first = manager.controlnet(get_modality("canny"))
    again = manager.controlnet(get_modality("canny"))
    assert first is again
    # Sketch shares the scribble ControlNet: one load serves both tabs.
    assert manager.controlnet(get_modality("scribble")) is manager.controlnet(
        get_modality("sketch")
    )
    assert manager.loads == {"base": 1, "controlnet:canny": 1, "controlnet:scribble": 1}


def test_controlnet_cache_is_a_bounded_lru():
    manager = ModelManager(Settings(backend="tiny", max_cached_controlnets=1))
    manager.controlnet(get_modality("canny"))
    manager.controlnet(get_modality("scribble"))
    assert manager.cached_controlnets() == ["scribble"]
    manager.controlnet(get_modality("canny"))
    assert manager.loads["controlnet:canny"] == 2


def test_concurrent_loads_happen_once():
    manager = ModelManager(Settings(backend="tiny"))
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(manager.controlnet(get_modality("canny"))))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(r) for r in results}) == 1
    assert manager.loads == {"base": 1, "controlnet:canny": 1}


def test_model_loads_never_overlap_across_threads(monkeypatch):
    """diffusers patches torch process-wide while it builds a model: two overlapping builds left
    every later module on the meta device. Loads of different models must run one at a time."""
    import controlnet_core.concurrency as concurrency
    import controlnet_core.models as models
    import controlnet_core.tiny as tiny

    manager = ModelManager(Settings(backend="tiny"))
    manager.base()
    threads = [
        threading.Thread(target=manager.controlnet, args=(get_modality(m),))
        for m in ("canny", "depth", "seg", "mlsd")
    ]
    # A build starts only once every thread has asked for the construction lock (or started a
    # build without it): the others are then all waiting to build, so any build the lock lets in
    # alongside this one is counted, on every run.
    ready = Arrivals(threads)
    lock = ReportingLock(models.model_construction_lock, ready)
    monkeypatch.setattr(models, "model_construction_lock", lock)
    monkeypatch.setattr(concurrency, "model_construction_lock", lock)
    build = tiny.tiny_controlnet
    running, overlaps = [], []

    def build_with_all_waiting(*args, **kwargs):
        running.append(1)
        ready.arrive()
        ready.wait_for(len(threads))
        overlaps.append(len(running))
        try:
            return build(*args, **kwargs)
        finally:
            running.pop()

    monkeypatch.setattr(tiny, "tiny_controlnet", build_with_all_waiting)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(overlaps) == 4 and max(overlaps) == 1
    assert torch.nn.Linear(2, 2).weight.device.type == "cpu"  # torch left unpatched


def test_downloads_run_outside_the_construction_lock(monkeypatch):
    """A first download (minutes for a base model) must not hold up other models' loads."""
    import controlnet_core.models as models
    from controlnet_core.concurrency import model_construction_lock

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "hub_reachable", lambda timeout: True)
    cache: set[str] = set()
    lock_free_during_fetch = []

    def lock_is_free() -> bool:
        result = []

        def probe():
            acquired = model_construction_lock.acquire(blocking=False)
            if acquired:
                model_construction_lock.release()
            result.append(acquired)

        thread = threading.Thread(target=probe)
        thread.start()
        thread.join()
        return result[0]

    def fetch(source):
        lock_free_during_fetch.append(lock_is_free())
        cache.add(source)

    def loader(source, local_files_only=False):
        assert not lock_is_free()  # building happens under the lock
        if local_files_only and source not in cache:
            raise FileNotFoundError(source)
        return f"model from {source}"

    assert models._from_pretrained_local_first(loader, "org/net", fetch=fetch) == (
        "model from org/net"
    )
    assert lock_free_during_fetch == [True]


def test_a_request_never_evicts_its_own_controlnets(square_image):
    from controlnet_core import ControlSpec

    engine = Engine(Settings(backend="tiny", max_cached_controlnets=1))
    request = GenerationRequest(
        modality="canny",
        steps=1,
        resolution=64,
        extra_controls=(ControlSpec("scribble", "none"), ControlSpec("mlsd", "none")),
    )
    for _ in range(2):
        engine.generate(request, square_image, extra_images=[square_image, square_image])
    loads = engine.manager.loads
    assert [loads[f"controlnet:{k}"] for k in ("canny", "scribble", "mlsd")] == [1, 1, 1]
    depth = GenerationRequest(modality="depth", preprocessor="none", steps=1, resolution=64)
    engine.generate(depth, square_image)
    assert engine.manager.cached_controlnets() == ["depth"]  # back to its size


def test_tiny_controlnets_do_not_depend_on_the_global_rng():
    unet = tiny_pipeline().unet
    torch.manual_seed(1)
    first = tiny_controlnet(unet, "canny").state_dict()
    torch.manual_seed(2)
    second = tiny_controlnet(unet, "canny").state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_sampler_names_decide_the_algorithm_whatever_the_model_config_says():
    from controlnet_core.models import make_scheduler

    config = dict(tiny_pipeline().scheduler.config)
    config.update(use_karras_sigmas=True, algorithm_type="sde-dpmsolver++", solver_order=3)
    dpm = make_scheduler("DPM++ 2M", config)
    assert not dpm.config.use_karras_sigmas
    assert (dpm.config.algorithm_type, dpm.config.solver_order) == ("dpmsolver++", 2)
    assert make_scheduler("DPM++ 2M Karras", config).config.use_karras_sigmas
    assert not make_scheduler("Euler", config).config.use_karras_sigmas
    assert not make_scheduler("UniPC", config).config.use_karras_sigmas


def test_two_threads_on_two_modalities_match_sequential_runs(square_image):
    engine = Engine(Settings(backend="tiny"))
    requests = {
        "canny": GenerationRequest(modality="canny", seed=1, **FAST),
        "scribble": GenerationRequest(modality="scribble", seed=1, **FAST),
    }
    sequential = {k: engine.generate(r, square_image).arrays for k, r in requests.items()}
    # Threads may split CPU kernels differently (float summation order), so compare within 1e-4;
    # a request that saw the other tab's ControlNet would be off by far more.
    assert np.abs(sequential["canny"] - sequential["scribble"]).max() > 1e-2
    concurrent: dict[str, np.ndarray] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run(key: str) -> None:
        try:
            barrier.wait()
            for _ in range(3):
                concurrent[key] = engine.generate(requests[key], square_image).arrays
                np.testing.assert_allclose(concurrent[key], sequential[key], atol=1e-4)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(key,)) for key in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for key in requests:
        np.testing.assert_allclose(concurrent[key], sequential[key], atol=1e-4)


def test_real_loading_path_from_local_folders_matches_the_tiny_backend(saved_models, square_image):
    settings = Settings(
        backend="real",
        base_model=str(saved_models / "sd15"),
        controlnet_dir=str(saved_models / "controlnets"),
        device="cpu",
        dtype="float32",  # as the tiny backend runs
    )
    engine = Engine(settings)
    request = GenerationRequest(modality="canny", seed=9, **FAST)
    loaded = engine.generate(request, square_image)
    assert loaded.recipe["backend"] == "real"
    assert loaded.recipe["base_model"] == "sd15"  # by name: the server's folders stay private
    assert loaded.recipe["controlnet_model"] == "lllyasviel/control_v11p_sd15_canny"
    reference = Engine(Settings(backend="tiny")).generate(request, square_image)
    np.testing.assert_allclose(loaded.arrays, reference.arrays, atol=1e-5)


def test_single_file_controlnets_load_offline_like_the_a1111_extension_keeps_them(
    saved_models, tmp_path, square_image
):
    """control_v11p_sd15_canny.pth in --controlnet-dir: the original ControlNet 1.1 layout, its
    config derived from the base UNet (no hub), the same images as the diffusers folder."""
    from tests.ldm_checkpoint import save_ldm_controlnet

    unet = tiny_pipeline().unet
    save_ldm_controlnet(tiny_controlnet(unet, "canny"), tmp_path / "control_v11p_sd15_canny.pth")
    shuffle = tiny_controlnet(unet, "shuffle")
    save_ldm_controlnet(shuffle, tmp_path / "control_v11e_sd15_shuffle_fp16.safetensors")
    settings = Settings(
        backend="real",
        base_model=str(saved_models / "sd15"),
        controlnet_dir=str(tmp_path),
        device="cpu",
        dtype="float32",
    )
    engine = Engine(settings)
    request = GenerationRequest(modality="canny", seed=9, **FAST)
    loaded = engine.generate(request, square_image)
    assert loaded.recipe["controlnet_model"] == "lllyasviel/control_v11p_sd15_canny"
    reference = Engine(Settings(backend="tiny")).generate(request, square_image)
    np.testing.assert_allclose(loaded.arrays, reference.arrays, atol=1e-5)
    # The shuffle ControlNet pools its condition: a setting the file cannot carry.
    model = engine.manager.controlnet(get_modality("shuffle")).model
    assert model.config.global_pool_conditions is True
    expected = shuffle.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in model.state_dict().items())


def test_bfloat16_loads_real_weights_in_bfloat16_and_stays_close_to_float32(
    saved_models, square_image
):
    import torch

    def engine(dtype: str) -> Engine:
        return Engine(
            Settings(
                backend="real",
                base_model=str(saved_models / "sd15"),
                controlnet_dir=str(saved_models / "controlnets"),
                device="cpu",
                dtype=dtype,
            )
        )

    request = GenerationRequest(modality="canny", seed=9, **FAST)
    half = engine("bfloat16")
    result = half.generate(request, square_image)
    assert half.manager.base().unet.dtype == torch.bfloat16
    assert half.manager.controlnet(get_modality("canny")).model.dtype == torch.bfloat16
    assert result.recipe["dtype"] == "bfloat16"
    assert backend_note(half, "canny").endswith("Running on cpu, bfloat16.")
    full = engine("float32").generate(request, square_image)
    assert full.recipe["dtype"] == "float32"
    difference = np.abs(result.arrays - full.arrays)
    # bfloat16 keeps 8 bits of mantissa: the same image to within a few levels, not bit-identical.
    assert difference.mean() < 0.01 and difference.max() > 0


def test_auto_backend_uses_a_local_base_model(saved_models):
    settings = Settings(backend="auto", base_model=str(saved_models / "sd15"))
    assert resolve_backend(settings) == "real"


def test_missing_base_model_says_what_is_missing_and_how_to_fix_it(square_image):
    engine = Engine(Settings(backend="real", base_model="nobody/no-such-model", device="cpu"))
    with pytest.raises(WeightsUnavailableError) as caught:
        engine.generate(GenerationRequest(modality="canny", **FAST), square_image)
    message = str(caught.value)
    assert "'nobody/no-such-model' could not be loaded" in message
    assert "--base-model" in message and "--backend toy" in message and "hub" in message


def test_missing_controlnet_names_the_weights_and_the_local_folder(saved_models, square_image):
    settings = Settings(
        backend="real",
        base_model=str(saved_models / "sd15"),
        controlnet_dir=str(saved_models / "controlnets"),
        device="cpu",
    )
    engine = Engine(settings)
    with pytest.raises(WeightsUnavailableError) as caught:
        engine.generate(GenerationRequest(modality="scribble", **FAST), square_image)
    message = str(caught.value)
    assert "lllyasviel/control_v11p_sd15_scribble" in message
    assert "control_v11p_sd15_scribble/config.json" in message


def test_missing_single_file_is_reported(tmp_path, square_image):
    engine = Engine(Settings(backend="real", base_model=str(tmp_path / "model.safetensors")))
    with pytest.raises(WeightsUnavailableError, match="no such file"):
        engine.generate(GenerationRequest(modality="canny", **FAST), square_image)


def test_device_and_dtype_choice(monkeypatch):
    import torch

    from controlnet_core import models

    assert pick_device("cpu").type == "cpu"
    # auto: bfloat16 where the CPU computes it in hardware (twice as fast), else float32.
    monkeypatch.setattr(models, "cpu_has_fast_bfloat16", lambda: True)
    assert pick_dtype(torch.device("cpu")) == torch.bfloat16
    monkeypatch.setattr(models, "cpu_has_fast_bfloat16", lambda: False)
    assert pick_dtype(torch.device("cpu")) == torch.float32
    assert pick_dtype(torch.device("cuda")) == torch.float16
    assert pick_dtype(torch.device("cpu"), "bfloat16") == torch.bfloat16
    assert pick_dtype(torch.device("cuda"), "float32") == torch.float32
    with pytest.raises(ValueError, match="float16 needs a GPU"):
        pick_dtype(torch.device("cpu"), "float16")
    with pytest.raises(ValueError, match="float16 needs a GPU"):
        ModelManager(Settings(backend="tiny", device="cpu", dtype="float16"))
    # The toy and tiny models are small and trained/built in float32: they ignore the setting.
    assert ModelManager(Settings(backend="tiny", dtype="bfloat16")).dtype == torch.float32
    if torch.cuda.is_available():
        assert pick_device("auto").type == "cuda"
    else:
        assert pick_device("auto").type in ("cpu", "mps")
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")


def test_settings_from_env_and_cli():
    env = {
        "CONTROLNET_BACKEND": "tiny",
        "CONTROLNET_PORT": "9000",
        "CONTROLNET_MAX_RESOLUTION": "1024",
        "CONTROLNET_MAX_IMAGES": "3",
        "CONTROLNET_SAFETY_CHECKER": "false",
    }
    settings = settings_from_env(env)
    assert settings.backend == "tiny" and settings.port == 9000
    assert settings.max_resolution == 1024
    assert settings.max_images == 3 and settings.safety_checker is False
    cli = settings_from_cli(["--port", "9100", "--backend", "real", "--max-images", "8"], env)
    assert cli.port == 9100 and cli.backend == "real" and cli.max_images == 8
    # Past a hard maximum is an error naming the range (tests/test_settings.py has the rest).
    with pytest.raises(ValueError, match="from 1 to 8"):
        settings_from_cli(["--max-images", "99"], env)
    with pytest.raises(ValueError, match="CONTROLNET_PORT"):
        settings_from_env({"CONTROLNET_PORT": "eighty"})
    with pytest.raises(ValueError, match="backend must be one of"):
        Settings(backend="gpu")
    assert settings_from_env({"CONTROLNET_DTYPE": "bfloat16"}).dtype == "bfloat16"
    assert settings_from_cli(["--dtype", "float32"], {"CONTROLNET_DTYPE": "bfloat16"}).dtype == (
        "float32"
    )
    with pytest.raises(ValueError, match="dtype must be one of"):
        Settings(dtype="fp8")
    with pytest.raises(SystemExit):
        settings_from_cli(["--backend", "gpu"], {})


def test_env_errors_name_the_variable_and_empty_values_mean_the_default():
    with pytest.raises(ValueError, match="^CONTROLNET_BACKEND: backend must be one of"):
        settings_from_env({"CONTROLNET_BACKEND": "Tiny"})
    with pytest.raises(ValueError, match="^CONTROLNET_SCHEDULER: scheduler must be one of"):
        settings_from_env({"CONTROLNET_SCHEDULER": "plms"})
    # An unfilled template line must not switch the safety checker off or the base model to "".
    empty = settings_from_env(
        {"CONTROLNET_SAFETY_CHECKER": "", "CONTROLNET_BASE_MODEL": " ", "CONTROLNET_PORT": ""}
    )
    assert empty == Settings()


def test_toy_backend_notes_say_which_tabs_it_covers(monkeypatch):
    import controlnet_core.toy as toy

    engine = Engine(Settings(backend="toy"))
    monkeypatch.setattr(
        toy, "toy_controlnet_folder", lambda key: toy.TOY_WEIGHTS_DIR if key == "canny" else None
    )
    assert backend_note(engine, "canny").startswith("Toy model: shapes only")
    note = backend_note(engine, "depth")
    assert "no Depth ControlNet" in note and "lllyasviel/control_v11f1p_sd15_depth" in note
    assert backend_note(Engine(Settings(backend="tiny")), "depth").startswith("Tiny random")


def test_an_empty_variable_falls_back_to_gradios_own():
    env = {
        "CONTROLNET_HOST": "",
        "GRADIO_SERVER_NAME": "0.0.0.0",
        "CONTROLNET_PORT": " ",
        "GRADIO_SERVER_PORT": "7861",
    }
    settings = settings_from_env(env)
    assert (settings.host, settings.port) == ("0.0.0.0", 7861)


def test_low_vram_decodes_in_tiles_with_nearly_the_same_images(square_image):
    """--low-vram: the VAE decodes one image at a time and in tiles above its tile size (64 px for
    the tiny VAE); the images stay within blending noise of the whole-image decode."""
    request = GenerationRequest(modality="canny", **{**FAST, "resolution": 128, "num_images": 2})
    whole = Engine(Settings(backend="tiny")).generate(request, square_image)
    engine = Engine(Settings(backend="tiny", low_vram=True))
    tiled = engine.generate(request, square_image)
    vae = engine.manager.base().vae
    assert vae.use_tiling and vae.use_slicing
    difference = np.abs(tiled.arrays - whole.arrays)
    assert 0 < difference.mean() < 0.05


def test_weights_messages_name_local_paths_by_their_last_part():
    """A loader's reason quoting the server's folders (absolute, with spaces, or relative ones
    from the settings) shows them by their last part."""
    from controlnet_core.models import ModelManager

    manager = ModelManager(Settings(backend="real", controlnet_dir="my models/control nets"))
    reason = OSError(
        "no config.json in /srv/John Smith/vae, nor in my models/control nets/canny or "
        "/opt/hub/x.json"
    )
    message = manager._missing_weights_message("VAE", "/srv/John Smith/vae", reason, "hint")
    assert "The VAE weights 'vae' could not be loaded (no config.json in vae, nor in " in message
    assert "nor in control nets/canny or x.json" in message
    assert "John Smith" not in message and "my models" not in message and "/opt" not in message


def test_weights_messages_hide_the_hub_cache_and_home_and_keep_dots(monkeypatch, tmp_path):
    """The hub cache under a home folder with spaces (not a settings path) is named by its last
    part, the home folder as "~"; `--controlnet-dir .` names nothing and leaves the text's dots."""
    from huggingface_hub import constants

    from controlnet_core.models import ModelManager

    home = tmp_path / "Jane Doe"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hf cache" / "hub"))
    reason = OSError(
        f"no config.json in {home}/hf cache/hub/models--x--y/snapshots/abc, "
        f"nor in {home}/my weights/z."
    )
    message = ModelManager(Settings(backend="real"))._missing_weights_message(
        "ControlNet", "x/y", reason, "hint"
    )
    assert "(no config.json in hub/models--x--y/snapshots/abc, nor in ~/my weights/z.)" in message
    assert "Jane" not in message and "hf cache" not in message

    reason = OSError("no diffusion_pytorch_model.safetensors in ./controlnet-union-sdxl-1.0.")
    message = ModelManager(Settings(backend="real", controlnet_dir="."))._missing_weights_message(
        "ControlNet", "xinsir/controlnet-union-sdxl-1.0", reason, "hint"
    )
    assert "(no diffusion_pytorch_model.safetensors in ./controlnet-union-sdxl-1.0.)" in message


@pytest.mark.parametrize("home", ["/", "/app"])
def test_weights_messages_keep_urls_whole_whatever_the_home_folder(monkeypatch, home):
    """A home of "/" (a container's user without a home) or a short one names only itself: a
    URL in the reason stays whole, and other absolute paths still show their last part only."""
    from controlnet_core.errors import failure_reason

    monkeypatch.setenv("HOME", home)
    reason = OSError(
        "cannot connect to 'https://huggingface.co/apple/x' and found no cached files at "
        "/srv/models/cache/x."
    )
    assert failure_reason(reason) == (
        "cannot connect to 'https://huggingface.co/apple/x' and found no cached files at x."
    )
    assert failure_reason(OSError("no file in /app/weights/y")) == (
        "no file in ~/weights/y" if home == "/app" else "no file in y"
    )
