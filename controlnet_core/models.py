"""Model loading and caching: one base pipeline, ControlNets loaded lazily into a bounded LRU cache.

`ModelManager` is the only shared model state. It is safe under concurrency: loads happen under locks
(each model is loaded once even when many requests ask at the same time). Requests never mutate it:
`sampling.sample` takes the ControlNets of a request as arguments and makes its own scheduler instance
(`make_scheduler`), so two requests on two modalities never see each other's ControlNet or sampler
state. Nothing is loaded at construction: the first request pays for loading.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from controlnet_core.concurrency import import_runtime, model_construction_lock
from controlnet_core.errors import failure_reason, shown
from controlnet_core.families import (
    FAMILY_LABELS,
    SDXL,
    ModelFamilyError,
    base_family,
    check_base_family,
    check_controlnet_family,
    family_of_config,
    running_family,
)
from controlnet_core.hub import hub_offline, hub_reachable
from controlnet_core.images import SDXL_NATIVE
from controlnet_core.modalities import MODALITIES, Modality
from controlnet_core.offload import Offloader
from controlnet_core.preprocessors import WeightsUnavailableError
from controlnet_core.settings import (
    DEFAULT_FEW_STEP_LORA,
    DEFAULT_FEW_STEP_LORA_SDXL,
    DTYPES,
    FEW_STEP_SCHEDULER,
    SCHEDULER_NAMES,
    SDXL_FP16_VAE,
    VAE_AUTO,
    VAE_BASE,
    Settings,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SCHEDULERS: dict[str, str] = {
    "UniPC": "UniPCMultistepScheduler",
    "DPM++ 2M": "DPMSolverMultistepScheduler",
    "DPM++ 2M Karras": "DPMSolverMultistepScheduler",
    "Euler a": "EulerAncestralDiscreteScheduler",
    "Euler": "EulerDiscreteScheduler",
    "DDIM": "DDIMScheduler",
    "LCM": "LCMScheduler",
}

assert tuple(SCHEDULERS) == SCHEDULER_NAMES, "settings.SCHEDULER_NAMES must list SCHEDULERS"

_UNET_CONFIG = "unet/config.json"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")

StatusCallback = Callable[[str], None]


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA when present, else Apple MPS, else CPU; an explicit request must be available."""
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but CUDA is not available")
    if requested == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError("device 'mps' was requested but MPS is not available")
    return torch.device(requested)


def cpu_has_fast_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), where it runs SD1.5
    about twice as fast as float32 (BENCHMARKS.md); without them bfloat16 is emulated, and slower."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(getattr(torch.cpu, name)() for name in probes)
    except AttributeError:  # a torch without the probes: ask the kernel (Linux)
        try:
            flags = Path("/proc/cpuinfo").read_text().split()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(device: torch.device, requested: str = "auto") -> torch.dtype:
    """`requested`, or for "auto": float16 on accelerators (half the memory, same images for
    SD1.5), bfloat16 on CPUs that compute it in hardware (`cpu_has_fast_bfloat16`: twice as fast,
    images within the tolerance BENCHMARKS.md states), float32 on other CPUs. float16 is refused
    on CPU, where torch lacks fast kernels for it."""
    import torch

    if requested == "auto":
        if device.type in ("cuda", "mps"):
            return torch.float16
        return torch.bfloat16 if cpu_has_fast_bfloat16() else torch.float32
    if requested not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {shown(requested)}")
    if requested == "float16" and device.type == "cpu":
        raise ValueError(
            "dtype float16 needs a GPU (cuda or mps); on CPU use bfloat16 (fast on CPUs with "
            "AVX512-BF16 or AMX) or float32"
        )
    return getattr(torch, requested)


def make_scheduler(name: str, base_config: dict):
    """A fresh scheduler instance named `name` (see SCHEDULERS) from the base model's config."""
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {list(SCHEDULERS)}; got {shown(name)}")
    cls = getattr(diffusers, SCHEDULERS[name])
    # The model's config decides its training schedule (betas, prediction type, spacing); the sampler
    # name alone decides the sampling algorithm, whatever variant the model's own config names.
    extra: dict = {}
    if "use_karras_sigmas" in inspect.signature(cls.__init__).parameters:
        extra["use_karras_sigmas"] = "Karras" in name
    if cls.__name__ == "DPMSolverMultistepScheduler":
        extra.update(algorithm_type="dpmsolver++", solver_order=2)
    return cls.from_config(base_config, **extra)


@contextmanager
def _quiet_diffusers():
    """Silence diffusers' expected warnings while loading (dtype casts, the toy VAE)."""
    from diffusers.utils import logging as diffusers_logging

    previous = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(previous)


@dataclass(frozen=True)
class LoadedFewStep:
    """The base pipeline's parts with a UNet that has the few-step LoRA fused in."""

    lora_id: str
    pipe: object


@dataclass(frozen=True)
class LoadedControlNet:
    key: str
    model_id: str
    model: torch.nn.Module


CONTROLNET_FILE_SUFFIXES = (".safetensors", ".pth", ".ckpt")

# What a single file cannot say about its ControlNet: the hub configs that differ from the UNet's.
CONTROLNET_CONFIG_OVERRIDES: dict[str, dict] = {
    "shuffle": {"global_pool_conditions": True},  # control_v11e_sd15_shuffle
}


def _controlnet_from_single_file(
    path: Path, unet, modality: Modality, dtype: torch.dtype, union: bool = False
):
    """A ControlNet kept as one file (ControlNet 1.1's original layout, or diffusers' own keys as
    SDXL ControlNets are shared), with its config derived from the base UNet's, offline.

    A ControlNet copies the UNet's encoder, so its config is the UNet's (as `from_unet` builds it)
    plus the few settings in CONTROLNET_CONFIG_OVERRIDES; no config is fetched from the hub. A
    `union` ControlNet's own sizes are read from its weights (`_union_from_file`).
    """
    import json
    import tempfile

    from diffusers import ControlNetModel

    if union:
        return _union_from_file(path, unet, dtype)
    accepted = inspect.signature(ControlNetModel.__init__).parameters
    config = {key: value for key, value in unet.config.items() if key in accepted}
    config.update(CONTROLNET_CONFIG_OVERRIDES.get(modality.controlnet_key, {}))
    with (
        tempfile.TemporaryDirectory(prefix="controlnet-config-") as folder,
        model_construction_lock,
    ):
        (Path(folder) / "config.json").write_text(
            json.dumps({"_class_name": "ControlNetModel", **config})
        )
        return ControlNetModel.from_single_file(
            str(path), config=folder, local_files_only=True, dtype=dtype
        )


def _holds_union(folder: Path | None, file: Path | None, expected: bool) -> bool:
    """Whether a local ControlNet is a union one: its folder's config names the class, a single
    file has the union model's task embedding; `expected` (the registry's) for hub weights."""
    if folder is not None:
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            return expected
        # diffusers' class, or xinsir's own code's name for it; its control types either way.
        named = config.get("_class_name") in ("ControlNetUnionModel", "ControlNetModel_Union")
        return named or "num_control_type" in config
    if file is not None:
        if file.suffix != ".safetensors":
            return False  # the pickled files are ControlNet 1.1's originals
        from safetensors import safe_open

        try:
            with safe_open(str(file), framework="numpy") as weights:
                return "task_embedding" in list(weights.keys())
        except Exception:  # not a readable file: the loader says what failed
            return expected
    return expected


# xinsir's union ControlNet's sizes that its weights do not show (its config.json).
UNION_ATTENTION_HEADS = 8


def _union_from_file(path: Path, unet, dtype: torch.dtype):
    """A union ControlNet kept as one .safetensors file in diffusers' layout (as xinsir ships
    its ProMax weights, `diffusion_pytorch_model_promax.safetensors`), offline: its config is the
    UNet's plus what its weights show (how many control types: 6, or 8 for ProMax; the widths of
    its condition encoder and of the transformer that fuses several maps)."""

    from diffusers import ControlNetUnionModel
    from safetensors.torch import load_file

    weights = load_file(str(path))
    accepted = inspect.signature(ControlNetUnionModel.__init__).parameters
    config = {key: value for key, value in unet.config.items() if key in accepted}
    embedding = [
        weights[f"controlnet_cond_embedding.blocks.{index}.weight"].shape[0]
        for index in range(1, 64, 2)
        if f"controlnet_cond_embedding.blocks.{index}.weight" in weights
    ]
    layers = {m[1] for key in weights if (m := re.match(r"transformer_layes\.(\d+)\.", key))}
    config.update(
        conditioning_embedding_out_channels=(
            weights["controlnet_cond_embedding.conv_in.weight"].shape[0],
            *embedding,
        ),
        num_control_type=weights["task_embedding"].shape[0],
        num_trans_channel=weights["task_embedding"].shape[1],
        num_trans_head=UNION_ATTENTION_HEADS,
        num_trans_layer=len(layers),
        num_proj_channel=weights["spatial_ch_projs.weight"].shape[0],
    )
    with model_construction_lock:
        model = ControlNetUnionModel.from_config(config)
        model.load_state_dict(weights, strict=True)
    return model.to(dtype)


def _from_pretrained_local_first(
    loader: Callable, source: str, fetch: Callable[[str], object] | None = None, **kwargs
):
    """Load from a local folder, or from the hub cache first and the network only if that fails.

    Only building the model holds `model_construction_lock`: a download (`fetch`, into the hub
    cache) runs outside it, so one user's first multi-GB download does not hold up every other
    load. A fetch that fails or misses files leaves the rest to `loader`, under the lock.
    """
    if Path(source).exists() or hub_offline():
        with model_construction_lock:
            return loader(source, **kwargs)
    try:
        with model_construction_lock:
            return loader(source, local_files_only=True, **kwargs)
    except Exception:  # not cached (yet): the network, unless it is plainly unreachable
        if not hub_reachable(timeout=3.0):
            raise
    if fetch is not None:
        try:
            fetch(source)
            with model_construction_lock:
                return loader(source, local_files_only=True, **kwargs)
        except Exception as error:
            log.warning(
                "downloading %s ahead of loading failed (%s); loading directly", source, error
            )
    with model_construction_lock:
        return loader(source, **kwargs)


def _fetch_model_files(repo_id: str) -> None:
    """Download a diffusers model's config and weights (safetensors, else .bin) into the hub cache."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    hf_hub_download(repo_id, "config.json")
    try:
        hf_hub_download(repo_id, "diffusion_pytorch_model.safetensors")
    except EntryNotFoundError:
        hf_hub_download(repo_id, "diffusion_pytorch_model.bin")


def _missing_weights_message(
    what: str, model_id: str, error: Exception, hint: str, private: Collection[str] = ()
) -> str:
    """What could not be loaded and why, then how to provide it; models by name, not by path
    (`private`: more local paths to name by their last part, such as the settings' folders,
    which a loader's reason may quote relative or with spaces)."""
    reason = failure_reason(error, private, {model_id: shown_source(model_id)})
    return (
        f"The {what} weights '{shown_source(model_id)}' could not be loaded ({reason[:300]}).\n"
        f"Provide them in one of these ways:\n"
        f"  • allow access to the Hugging Face hub (the weights are downloaded once and cached);\n"
        f"  • {hint};\n"
        f"  • or run offline: `python app.py --backend toy` (small model trained in this repo, "
        f"shapes only) or `--backend tiny` (random weights, for testing)."
    )


class ModelManager:
    """Loads and caches the base pipeline and the ControlNets for one backend.

    `backend` "auto" resolves at the first load: real weights if the base model loads, else the toy
    model when its weights ship with the project. The device and dtype are decided at first use
    (importing torch takes seconds the page should not wait for), or at construction when the
    settings name an accelerator or float16, so that a choice this machine cannot run fails at
    start-up.
    """

    def __init__(self, settings: Settings, backend: str | None = None) -> None:
        self.settings = settings
        self._hardware: tuple[torch.device, torch.dtype] | None = None
        self._hardware_lock = threading.Lock()
        if settings.device in ("cuda", "mps") or settings.dtype == "float16":
            self._pick_hardware()
        self._backend = backend or settings.backend
        self._base = None
        self._base_id: str | None = None
        self._base_lock = threading.Lock()
        self._family: str | None = None
        self._family_guess: str | None = None
        self._few_step: LoadedFewStep | None = None
        self._few_step_lock = threading.Lock()
        self._offloader: Offloader | None = None
        self._vae_id: str | None = None
        self._controlnets: OrderedDict[str, LoadedControlNet] = OrderedDict()
        self._controlnet_locks: dict[str, threading.Lock] = {}
        self._cache_lock = threading.Lock()
        self.loads: dict[str, int] = {}

    # --- what is loaded -------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        """The backend in use ("auto" until the first load resolves it)."""
        return self._backend

    def _pick_hardware(self) -> tuple[torch.device, torch.dtype]:
        import_runtime()
        with self._hardware_lock:
            if self._hardware is None:
                device = pick_device(self.settings.device)
                self._hardware = device, pick_dtype(device, self.settings.dtype)
            return self._hardware

    @property
    def offloader(self) -> Offloader | None:
        """With settings.offload (real weights and the tiny ones): what moves each stage of a run
        onto the device, the models waiting in CPU memory meanwhile (see `offload`)."""
        if not self.settings.offload or self._backend not in ("real", "tiny", "auto"):
            return None
        if self._offloader is None:
            device = self.device
            with self._hardware_lock:
                if self._offloader is None:
                    self._offloader = Offloader(device)
        return self._offloader

    def _at_rest(self):
        """While offloading: hold the device, so that no run moves the base models meanwhile
        (what copies them, few-step mode's UNet and the tiny ControlNets, reads them at rest)."""
        return self.offloader.running() if self.offloader is not None else nullcontext()

    @property
    def _home(self) -> torch.device | str:
        """Where loaded models are kept: the device, or CPU memory when offloading."""
        return "cpu" if self.settings.offload and self._backend != "toy" else self.device

    @property
    def hardware_known(self) -> bool:
        """Whether the device and dtype are decided (asking for them may import torch)."""
        return self._hardware is not None

    @property
    def device(self) -> torch.device:
        return self._pick_hardware()[0]

    @property
    def dtype(self) -> torch.dtype:
        """The real weights' dtype (settings.dtype); the toy and tiny models always run float32."""
        import torch

        if self._backend in ("tiny", "toy"):
            return torch.float32
        return self._pick_hardware()[1]

    @property
    def dtype_name(self) -> str:
        """`dtype` as people write it ("bfloat16"), for recipes and the UI."""
        return str(self.dtype).removeprefix("torch.")

    @property
    def base_model_id(self) -> str | None:
        return self._base_id

    @property
    def family(self) -> str:
        """The family the base model runs as ("sd15" or "sdxl"): read from the loaded UNet, or
        before loading, once, from the model's config or file (no torch needed; for a hub id not
        in the cache, its UNet's config alone when the hub answers), SD1.x when unknown."""
        if self._family is not None:
            return self._family
        if self._family_guess is None:
            known = None
            if self._backend in ("real", "auto"):
                known = self._base_family(self.settings.base_model)
            self._family_guess = running_family(known)
        return self._family_guess

    def cached_controlnets(self) -> list[str]:
        with self._cache_lock:
            return list(self._controlnets)

    def _count_load(self, name: str) -> None:
        self.loads[name] = self.loads.get(name, 0) + 1

    # --- base model -----------------------------------------------------------------------------

    def base(self, status: StatusCallback | None = None):
        """The shared base `StableDiffusionPipeline`, loaded on first use."""
        if self._base is not None:
            return self._base
        import_runtime()
        with self._base_lock:
            if self._base is None:
                base, base_id = self._load_base(status)
                if self.settings.low_vram and hasattr(base.vae, "enable_tiling"):
                    base.vae.enable_slicing()
                    base.vae.enable_tiling()
                if self.compiles:
                    self._compile_base(base, status)
                self._base, self._base_id = base, base_id
                self._count_load("base")
        return self._base

    @property
    def compiles(self) -> bool:
        """Whether models run compiled (settings.compile; not the toy model, whose UNet the
        training lab trains through)."""
        return self.settings.compile and self._backend in ("real", "tiny")

    @property
    def warm_up_size(self) -> int:
        """The image size compiled at load: the size a first request most likely asks for."""
        if self._backend == "tiny":
            return 64
        if self.family == SDXL:
            return min(SDXL_NATIVE, self.settings.max_resolution_sdxl)
        return min(512, self.settings.max_resolution)

    def _compile_base(self, pipe, status: StatusCallback | None, rows: int = 2) -> None:
        """`pipe.unet` compiled and warmed up for `rows` rows a call (2: guidance on), in place;
        left eager when compiling fails (logged)."""
        from controlnet_core.compiled import Compiled, configure_cache, warm_up

        folder = configure_cache()
        _announce(status, "Compiling the UNet (first load only; the kernels are cached on disk)…")
        log.info("compiled kernels are cached in %s", folder)
        compiled = Compiled(pipe.unet)
        try:
            warm_up(compiled, None, self.warm_up_size, rows)
        except Exception:
            log.exception("compiling the UNet failed; it runs uncompiled")
            pipe.unet = compiled.eager
            return
        pipe.unet = compiled

    def _compile_controlnet(self, model, status: StatusCallback | None):
        """`model` compiled and warmed up with the base UNet; itself when compiling fails."""
        from controlnet_core.compiled import Compiled, warm_up

        _announce(status, "Compiling the ControlNet (first load only)…")
        compiled = Compiled(model)
        try:
            warm_up(self.base().unet, compiled, self.warm_up_size)
        except Exception:
            log.exception("compiling the ControlNet failed; it runs uncompiled")
            return compiled.eager
        return compiled

    def _load_base(self, status: StatusCallback | None):
        backend = self._backend
        if backend == "tiny":
            from controlnet_core.tiny import TINY_BASE_ID, tiny_pipeline

            _say(status, "Building the tiny offline model…")
            with model_construction_lock:
                return tiny_pipeline().to(self._home), TINY_BASE_ID
        if backend == "toy":
            return self._load_toy_base(status)
        try:
            pipe = self._load_real_base(status)
        except WeightsUnavailableError:
            if backend != "auto" or not _toy_available():
                raise
            log.warning("real SD1.5 weights unavailable; falling back to the toy model")
            self._backend = "toy"
            return self._load_toy_base(status)
        self._backend = "real"
        return pipe, self.settings.base_model

    def _load_toy_base(self, status: StatusCallback | None):
        from diffusers import StableDiffusionPipeline

        from controlnet_core.toy import TOY_WEIGHTS_DIR

        folder = TOY_WEIGHTS_DIR / "base"
        if not (folder / "model_index.json").exists():
            raise WeightsUnavailableError(
                f"The toy model's weights are missing from {folder}. Reproduce them with "
                "`python -m controlnet_core.toy.train`, or use `--backend tiny`."
            )
        _say(status, "Loading the toy model trained in this repo…")
        self._backend = "toy"
        # Its TAESD-class VAE makes diffusers warn about the type hint (AutoencoderKL) and about the
        # `block_out_channels` AutoencoderTiny writes to its own config; both are expected.
        with _quiet_diffusers(), model_construction_lock:
            pipe = StableDiffusionPipeline.from_pretrained(str(folder), dtype=self.dtype)
        return pipe.to(self.device), "toy:base"

    @staticmethod
    def _base_family(source: str) -> str | None:
        """The base model's family before it is loaded (see `families.base_family`); for a hub id
        not in the cache, from its UNet's config alone (a kilobyte), when the hub answers."""
        family = base_family(source)
        if family is not None or Path(source).exists() or hub_offline():
            return family
        if not hub_reachable(timeout=3.0):  # remembered for a minute: no wait per page build
            return None
        try:
            from huggingface_hub import hf_hub_download

            return family_of_config(
                json.loads(Path(hf_hub_download(source, _UNET_CONFIG)).read_text())
            )
        except Exception:  # not a diffusers repository, no network: the loader will say
            return None

    def _load_real_base(self, status: StatusCallback | None):
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        source = self.settings.base_model
        dtype = self.dtype
        family = self._base_family(source)
        check_base_family(source, family)
        sdxl = family == SDXL
        pipeline = StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline
        extra = {}
        if not self.settings.safety_checker and not sdxl:  # SDXL ships no safety checker
            extra = {"safety_checker": None, "requires_safety_checker": False}
        vae = self._vae_source(sdxl)
        if vae is not None:
            try:
                extra["vae"] = self._load_vae(vae, status)
                self._vae_id = vae
            except WeightsUnavailableError:
                if self.settings.vae != VAE_AUTO:
                    raise
                log.warning("%s unavailable: SDXL's own VAE decodes in float32", vae)
        _say(status, f"Loading base model {shown_source(source)} (first use only)…")
        try:
            if source.lower().endswith(SINGLE_FILE_SUFFIXES):
                if not Path(source).is_file():
                    raise FileNotFoundError(f"no such file: {source}")
                config = self.settings.base_model_config
                kwargs = {"config": config} if config else {}
                if config or hub_offline():
                    kwargs["local_files_only"] = True
                with model_construction_lock:
                    pipe = pipeline.from_single_file(source, dtype=dtype, **kwargs, **extra)
            else:
                pipe = _from_pretrained_local_first(
                    pipeline.from_pretrained,
                    source,
                    fetch=lambda s: pipeline.download(s, **extra),
                    dtype=dtype,
                    **extra,
                )
        except Exception as error:  # offline, not cached, bad path, bad file
            hint = (
                "point --base-model (or CONTROLNET_BASE_MODEL) at a local diffusers folder or a "
                "single .safetensors/.ckpt file (add --base-model-config with a diffusers folder "
                "to load a single file offline)"
            )
            raise WeightsUnavailableError(
                self._missing_weights_message("base model", source, error, hint)
            ) from error
        loaded = family_of_config(pipe.unet.config)
        check_base_family(source, loaded)  # a family the files could not tell before loading
        if (loaded == SDXL) != sdxl:
            raise ModelFamilyError(
                f"The base model '{shown_source(source)}' turned out to be "
                f"{FAMILY_LABELS[loaded]} only once loaded; give it as a diffusers folder or a "
                ".safetensors file, whose family can be read before loading."
            )
        self._family = running_family(loaded)
        keep_vae_float32(pipe, self._family)
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(self._home)

    def _missing_weights_message(
        self, what: str, model_id: str, error: Exception, hint: str
    ) -> str:
        """`_missing_weights_message`, naming the settings' local paths by their last part."""
        s = self.settings
        maybe_local = [s.base_model, s.vae, s.few_step_lora]  # or hub ids, shown as they are
        private = [path for path in maybe_local if path and shown_source(path) != path]
        private += [path for path in (s.base_model_config, s.controlnet_dir) if path]
        return _missing_weights_message(what, model_id, error, hint, private)

    def _vae_source(self, sdxl: bool) -> str | None:
        """The VAE to load in place of the base model's (settings.vae), None for its own: with
        "auto", SDXL_FP16_VAE for an SDXL base in float16, whose own VAE overflows there."""
        import torch

        choice = self.settings.vae
        if choice == VAE_AUTO:
            return SDXL_FP16_VAE if sdxl and self.dtype == torch.float16 else None
        return None if choice in (VAE_BASE, "") else choice

    @property
    def vae_id(self) -> str | None:
        """The VAE loaded in place of the base model's, once loaded (None: its own)."""
        return self._vae_id

    def _load_vae(self, source: str, status: StatusCallback | None):
        """The VAE `source` names (a hub id or a diffusers folder), in the weights' dtype."""
        from diffusers import AutoencoderKL

        _say(status, f"Loading the VAE {shown_source(source)} (first use only)…")
        try:
            return _from_pretrained_local_first(
                AutoencoderKL.from_pretrained, source, fetch=_fetch_model_files, dtype=self.dtype
            )
        except Exception as error:
            hint = "download it into a folder and point --vae (or CONTROLNET_VAE) at it"
            raise WeightsUnavailableError(
                self._missing_weights_message("VAE", source, error, hint)
            ) from error

    # --- few-step mode --------------------------------------------------------------------------

    def few_step(self, status: StatusCallback | None = None) -> LoadedFewStep:
        """The base pipeline for the LCM sampler: the same text encoder, VAE and tokenizer, and a
        copy of the UNet with the few-step LoRA (settings.few_step_lora) fused in, made once.

        The shared UNet is never changed (other requests run on it meanwhile); the copy costs one
        more UNet in memory (1.7 GB in float16 for SD1.5). The tiny backend fuses a seeded random
        LoRA of the same layout; the toy model has none.
        """
        if self._few_step is not None:
            return self._few_step
        base = self.base(status)
        with self._few_step_lock:
            if self._few_step is None:
                lora_id, (state, alphas) = self._few_step_weights(base, status)
                with self._at_rest():  # copied from CPU memory, not mid-move by another run
                    pipe = _fuse_lora(base, state, alphas)
                if self.compiles:  # Fast mode runs without guidance: one row an image
                    self._compile_base(pipe, status, rows=1)
                self._few_step = LoadedFewStep(lora_id, pipe)
                self._count_load("few_step_lora")
        return self._few_step

    def _few_step_weights(self, base, status: StatusCallback | None) -> tuple[str, tuple]:
        if self._backend == "tiny":
            from controlnet_core.tiny import TINY_FEW_STEP_LORA_ID, tiny_few_step_lora

            return TINY_FEW_STEP_LORA_ID, _lora_state_dict(tiny_few_step_lora(unfused(base.unet)))
        if self._backend == "toy":
            raise WeightsUnavailableError(
                f"The toy model has no few-step LoRA, so the {FEW_STEP_SCHEDULER} sampler (Fast "
                "mode) needs the real SD1.5 weights. Choose another sampler."
            )
        source = self.settings.few_step_lora
        if self.family == SDXL and source == DEFAULT_FEW_STEP_LORA:
            source = DEFAULT_FEW_STEP_LORA_SDXL
        _say(status, f"Loading the few-step LoRA {shown_source(source)} (first use only)…")
        try:
            return source, _lora_state_dict(source, sdxl=self.family == SDXL)
        except Exception as error:
            hint = (
                "download its pytorch_lora_weights.safetensors and point --few-step-lora (or "
                "CONTROLNET_FEW_STEP_LORA) at the file or its folder"
            )
            raise WeightsUnavailableError(
                self._missing_weights_message("few-step LoRA", source, error, hint)
            ) from error

    # --- ControlNets ----------------------------------------------------------------------------

    def controlnet(
        self,
        modality: Modality,
        status: StatusCallback | None = None,
        keep: Collection[str] = (),
    ) -> LoadedControlNet:
        """The ControlNet of `modality`, from the LRU cache or loaded now (once, even if racing).

        Eviction spares the ControlNet keys in `keep` (the others of the same request), so a request
        that uses more ControlNets than the cache holds does not evict its own and reload them all
        next time; the cache shrinks back to its size on a later load.
        """
        base = self.base(status)
        key = self.controlnet_cache_key(modality)
        with self._cache_lock:
            cached = self._controlnets.get(key)
            if cached is not None:
                self._controlnets.move_to_end(key)
                return cached
            lock = self._controlnet_locks.setdefault(key, threading.Lock())
        with lock:
            with self._cache_lock:
                cached = self._controlnets.get(key)
                if cached is not None:
                    return cached
            model, model_id = self._load_controlnet(modality, base, status)
            if self.compiles:
                model = self._compile_controlnet(model, status)
            loaded = LoadedControlNet(key=key, model_id=model_id, model=model)
            self._count_load(f"controlnet:{key}")
            with self._cache_lock:
                self._controlnets[key] = loaded
                # In-flight requests keep their own reference, so eviction is safe.
                spare = {key, *keep}
                for old in [k for k in self._controlnets if k not in spare]:
                    if len(self._controlnets) <= self.settings.max_cached_controlnets:
                        break
                    del self._controlnets[old]
            return loaded

    def controlnet_cache_key(self, modality: Modality) -> str:
        """What the cache holds `modality`'s ControlNet under: the weights it loads, so that tabs
        sharing one model (Scribble and Sketch; SDXL's union ControlNet) load it once."""
        if self._backend == "real":
            return modality.controlnet_for(self.family) or modality.controlnet_key
        return modality.controlnet_key

    def _load_controlnet(self, modality: Modality, base, status: StatusCallback | None):
        from diffusers import ControlNetModel, ControlNetUnionModel

        backend = self._backend
        if backend == "tiny":
            from controlnet_core.tiny import TINY_CONTROLNET_PREFIX, tiny_controlnet

            with self._at_rest(), model_construction_lock:
                model = tiny_controlnet(unfused(base.unet), modality.controlnet_key)
            return model.to(self._home), TINY_CONTROLNET_PREFIX + modality.controlnet_key
        if backend == "toy":
            from controlnet_core.toy import toy_controlnet_folder

            folder = toy_controlnet_folder(modality.controlnet_key)
            if folder is None or not (folder / "config.json").exists():
                raise WeightsUnavailableError(
                    f"The toy model (shapes only, trained in this repo) has no ControlNet for "
                    f"{modality.label}. It covers: {', '.join(toy_modalities())}. Real weights "
                    f"('{modality.controlnet_id}') need hub access or --controlnet-dir."
                )
            _say(status, f"Loading the toy {modality.label} ControlNet…")
            with model_construction_lock:
                model = ControlNetModel.from_pretrained(str(folder), dtype=self.dtype)
            return model.to(self.device).eval(), f"toy:{folder.name}"
        source = modality.controlnet_for(self.family)
        if source is None:
            closest = f" The closest is {modality.sdxl_closest}." if modality.sdxl_closest else ""
            others = [m.label for m in MODALITIES.values() if m.controlnet_for(self.family)]
            raise WeightsUnavailableError(
                f"This app has no {FAMILY_LABELS[self.family]} ControlNet for {modality.label}."
                f"{closest} With an {FAMILY_LABELS[self.family]} base these tabs have one: "
                f"{', '.join(others)}.",
                "Or run an SD1.5 base model (--base-model), whose ControlNet 1.1 covers every tab.",
            )
        local = self._local_controlnet_folder(source)
        single_file = None if local else self._local_controlnet_file(source)
        # The union model serves several tabs, told apart by a control type (see sampling). What
        # a local folder or file holds decides its class, whatever tab's name it has.
        union = _holds_union(local, single_file, modality.uses_union(self.family))
        loader = ControlNetUnionModel if union else ControlNetModel
        shown = shown_source(str(local or single_file or source))
        _say(status, f"Loading ControlNet {shown} (first use only)…")
        try:
            if single_file is not None:
                model = _controlnet_from_single_file(
                    single_file, base.unet, modality, self.dtype, union
                )
            else:
                model = _from_pretrained_local_first(
                    loader.from_pretrained,
                    str(local or source),
                    fetch=_fetch_model_files,
                    dtype=self.dtype,
                )
        except Exception as error:
            name = source.split("/")[-1]
            hint = (
                f"download it into a folder and pass --controlnet-dir (or CONTROLNET_MODELS_DIR): "
                f"the app looks for <dir>/{name}/config.json, or a single file "
                f"<dir>/{name}.safetensors (or .pth) as A1111 and ComfyUI keep them"
            )
            raise WeightsUnavailableError(
                self._missing_weights_message(f"{modality.label} ControlNet", source, error, hint)
            ) from error
        check_controlnet_family(
            source, model.config, shown_source(self.settings.base_model), self.family
        )
        try:
            model = model.to(self._home).eval()
        except NotImplementedError as error:  # weights left unloaded ("meta"): not this model's
            raise WeightsUnavailableError(
                f"The {modality.label} ControlNet '{shown}' lacks weights its config asks for: "
                "its folder or file holds another kind of model. Put the model it is named "
                "after there."
            ) from error
        return model, source

    def _local_controlnet_folder(self, controlnet_id: str) -> Path | None:
        if not self.settings.controlnet_dir:
            return None
        folder = Path(self.settings.controlnet_dir) / controlnet_id.split("/")[-1]
        return folder if (folder / "config.json").exists() else None

    def _local_controlnet_file(self, controlnet_id: str) -> Path | None:
        """An original single-file ControlNet in --controlnet-dir (control_v11p_sd15_canny.pth…)."""
        if not self.settings.controlnet_dir:
            return None
        name = controlnet_id.split("/")[-1]
        for stem in (name, f"{name}_fp16", f"{name}.fp16"):
            for suffix in CONTROLNET_FILE_SUFFIXES:
                path = Path(self.settings.controlnet_dir) / f"{stem}{suffix}"
                if path.is_file():
                    return path
        return None


def unfused(model):
    """`model` as loaded: itself, or when it runs compiled an unfused copy (see `compiled`)."""
    from controlnet_core.compiled import Compiled, unfused_copy

    return unfused_copy(model) if isinstance(model, Compiled) else model


def _lora_state_dict(source: str | dict, sdxl: bool = False) -> tuple[dict, dict | None]:
    """A LoRA's weights in diffusers' layout and their per-layer alphas (kohya-format files, as
    LCM-LoRA ships, scale each layer by alpha ÷ rank), from a dict, a .safetensors file, a local
    folder or a hub repository (the hub cache first, the network only when it answers); `sdxl`:
    read as SDXL's pipeline reads LoRAs (its original block names map otherwise)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    pipeline = StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline
    if isinstance(source, str) and Path(source).is_file():
        from safetensors.torch import load_file

        source = load_file(source)
    if isinstance(source, dict):
        return pipeline.lora_state_dict(source)
    return _from_pretrained_local_first(pipeline.lora_state_dict, source)


def _fuse_lora(base, state: dict, alphas: dict | None):
    """A pipeline over `base`'s parts whose UNet is a copy of `base.unet` with the LoRA (`state`,
    `alphas`, from `_lora_state_dict`) fused in (diffusers' LoRA loader, through peft); its LoRA
    layers are removed again after fusing, so it runs as fast as the plain UNet."""
    import copy

    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from controlnet_core.sampling import is_sdxl

    sdxl = is_sdxl(base.unet)
    pipeline = StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline
    with model_construction_lock:
        # A compiled UNet runs fused QKV projections made from to_q/to_k/to_v: the LoRA goes into
        # those, and compiling the copy fuses them again.
        unet = unfused(base.unet)
        if unet is base.unet:
            unet = copy.deepcopy(unet)
        drop_hooks(unet)
        pipeline.load_lora_into_unet(state, alphas, unet=unet, adapter_name="fast")
        unet.fuse_lora(lora_scale=1.0)
        unet.unload_lora()
        unet.eval().requires_grad_(False)
    if sdxl:  # its prompt settings as the base pipeline's
        options = {"force_zeros_for_empty_prompt": base.config.force_zeros_for_empty_prompt}
    else:
        options = {"requires_safety_checker": False}
    pipe = pipeline(**{**base.components, "unet": unet}, **options)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def drop_hooks(model) -> None:
    """Remove the forward hooks a deep copy took over from its original (the inside view's, when
    a run was watching the shared UNet while it was copied): the copy would feed them forever."""
    for module in model.modules():
        module._forward_hooks.clear()
        module._forward_pre_hooks.clear()


def keep_vae_float32(pipe, family: str) -> None:
    """SDXL's VAE overflows in float16: loaded in float16, it moves to float32 for good (diffusers
    upcasts it around each decode, which would change a VAE other requests are using), unless its
    config says it need not (force_upcast false: madebyollin/sdxl-vae-fp16-fix, fine-tuned not to
    overflow). SD1.5's VAE is fine in float16, whatever its config's force_upcast default says."""
    import torch

    if family == SDXL and pipe.vae.dtype == torch.float16 and vae_overflows(pipe.vae):
        pipe.vae.to(dtype=torch.float32)


def vae_overflows(vae) -> bool:
    """Whether an SDXL VAE must not decode in float16 (its config's force_upcast, true unless a
    VAE was fine-tuned for float16)."""
    return bool(getattr(vae.config, "force_upcast", True))


def shown_source(source: str) -> str:
    """A model's name as a public page may show it: a hub id as it is, a local path by its last
    part (the server's folders are nobody's business)."""
    path = Path(source)
    local = path.exists() or path.is_absolute() or source.startswith((".", "~"))
    return path.name if local or source.count("/") > 1 else source


def _announce(status: StatusCallback | None, message: str) -> None:
    """`_say` for a step that must finish once begun (compiling a model that is loaded): a
    cancelled request's callback refuses it, but the model is shared, so the step goes on and the
    request stops at its next step instead."""
    try:
        _say(status, message)
    except Exception as error:  # the request's own reason to stop, raised again where it can
        log.info("%s (for a request that has stopped: %s)", message, type(error).__name__)


def _say(status: StatusCallback | None, message: str) -> None:
    log.info(message)
    if status is not None:
        status(message)


def _toy_available() -> bool:
    try:
        from controlnet_core.toy import TOY_WEIGHTS_DIR
    except ImportError:
        return False
    return (TOY_WEIGHTS_DIR / "base" / "model_index.json").exists()


def toy_modalities() -> list[str]:
    """Labels of the modalities the toy model has a ControlNet for."""
    from controlnet_core.toy import toy_controlnet_folder

    return [
        m.label
        for m in MODALITIES.values()
        if (folder := toy_controlnet_folder(m.controlnet_key)) is not None
        and (folder / "config.json").exists()
    ]


def resolve_backend(settings: Settings, probe_timeout: float = 3.0) -> str:
    """The backend "auto" will use, decided cheaply at start-up without loading any weights.

    Real weights when the base model is a local path, is in the hub cache, or the hub answers;
    otherwise the toy model (when its weights ship). Explicit backends are returned unchanged.
    """
    if settings.backend != "auto":
        return settings.backend
    if not _toy_available():
        return "real"
    source = settings.base_model
    if Path(source).exists():
        return "real"
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(source, "model_index.json"), str):
            return "real"
    except Exception:  # a malformed id is the loader's problem, not the probe's
        pass
    if hub_offline():
        return "toy"
    return "real" if hub_reachable(probe_timeout) else "toy"
