"""The one place where configuration is read: environment variables with defaults, CLI overrides.

Every setting has an environment variable (for Hugging Face Spaces and containers) and a flag of
`python app.py` (which wins). Limits are capped at their hard maximum, so a bad env value can never
make the app accept a 4096² request.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

BACKENDS = ("auto", "real", "toy", "tiny")
DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = ("auto", "float32", "bfloat16", "float16")

SCHEDULER_NAMES = ("UniPC", "DPM++ 2M", "DPM++ 2M Karras", "Euler a", "Euler", "DDIM")

DEFAULT_BASE_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
HARD_MAX_RESOLUTION = 1024
HARD_MAX_IMAGES = 8
HARD_MAX_STEPS = 100


@dataclass(frozen=True)
class Settings:
    """All runtime configuration of the app and the core.

    backend: "real" loads SD1.5 + ControlNet 1.1 weights (hub id, local folder or single file);
    "toy" runs the small model trained in this repo; "tiny" runs random SD1.5-shaped weights (tests);
    "auto" uses real weights when they can be loaded and falls back to the toy model otherwise.
    """

    backend: str = "auto"
    base_model: str = DEFAULT_BASE_MODEL
    base_model_config: str | None = None
    controlnet_dir: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    scheduler: str = "UniPC"
    safety_checker: bool = True
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    max_resolution: int = 768
    max_images: int = 4
    max_steps: int = 50
    max_cached_controlnets: int = 3
    queue_size: int = 16

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.scheduler not in SCHEDULER_NAMES:
            raise ValueError(f"scheduler must be one of {SCHEDULER_NAMES}, got {self.scheduler!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        # Caps: a setting may lower a limit, never raise it past the hard maximum.
        object.__setattr__(
            self, "max_resolution", _clamp(self.max_resolution, 64, HARD_MAX_RESOLUTION)
        )
        object.__setattr__(self, "max_images", _clamp(self.max_images, 1, HARD_MAX_IMAGES))
        object.__setattr__(self, "max_steps", _clamp(self.max_steps, 1, HARD_MAX_STEPS))
        object.__setattr__(self, "max_cached_controlnets", max(1, self.max_cached_controlnets))
        if self.max_resolution % 64:
            object.__setattr__(self, "max_resolution", self.max_resolution // 64 * 64)

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, int(value)))


_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0", "")


def parse_flag(name: str, value: Any) -> bool:
    """A yes/no setting: a bool, 0/1, or the words true/false (yes/no); ValueError otherwise.

    `bool("false")` is True, so API callers and hand-written recipes that send text get it parsed.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS + _FALSE_WORDS:
        return value.strip().lower() in _TRUE_WORDS
    raise ValueError(f"{name} must be true or false; got {value!r}")


ENV_VARS: dict[str, str] = {
    "backend": "CONTROLNET_BACKEND",
    "base_model": "CONTROLNET_BASE_MODEL",
    "base_model_config": "CONTROLNET_BASE_MODEL_CONFIG",
    "controlnet_dir": "CONTROLNET_MODELS_DIR",
    "device": "CONTROLNET_DEVICE",
    "dtype": "CONTROLNET_DTYPE",
    "scheduler": "CONTROLNET_SCHEDULER",
    "safety_checker": "CONTROLNET_SAFETY_CHECKER",
    "host": "CONTROLNET_HOST",
    "port": "CONTROLNET_PORT",
    "share": "CONTROLNET_SHARE",
    "max_resolution": "CONTROLNET_MAX_RESOLUTION",
    "max_images": "CONTROLNET_MAX_IMAGES",
    "max_steps": "CONTROLNET_MAX_STEPS",
    "max_cached_controlnets": "CONTROLNET_MAX_CACHED_CONTROLNETS",
    "queue_size": "CONTROLNET_QUEUE_SIZE",
}

# Read when our own variable is absent: Hugging Face Spaces and containers set gradio's.
FALLBACK_ENV_VARS: dict[str, str] = {
    "host": "GRADIO_SERVER_NAME",
    "port": "GRADIO_SERVER_PORT",
}


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from environment variables (see ENV_VARS), defaults for the rest."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    defaults = Settings()
    for field in fields(Settings):
        # An empty value (an unfilled .env or compose template) counts as unset: the fallback
        # variable, or else the default.
        names = [ENV_VARS[field.name], FALLBACK_ENV_VARS.get(field.name)]
        name = next((n for n in names if n and environ.get(n, "").strip()), None)
        if name is None:
            continue
        raw = environ[name]
        sources[field.name] = name
        default = getattr(defaults, field.name)
        try:
            if isinstance(default, bool):
                values[field.name] = parse_flag("the value", raw)
            elif isinstance(default, int):
                values[field.name] = int(raw)
            else:
                values[field.name] = (
                    raw or None if field.name.endswith(("_config", "_dir")) else raw
                )
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
    try:
        return Settings(**values)
    except ValueError as error:  # a choice setting ("backend must be one of …"): name its variable
        field_name = str(error).split(" ", 1)[0]
        if field_name in sources:
            raise ValueError(f"{sources[field_name]}: {error}") from None
        raise


def build_parser(defaults: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="ControlNet demo suite: every ControlNet modality in one tabbed app.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=defaults.backend,
        help="real: SD1.5 + ControlNet 1.1 weights; toy: small model trained in this repo "
        "(offline); tiny: random SD1.5-shaped weights (tests); auto: real, else toy",
    )
    parser.add_argument(
        "--base-model",
        default=defaults.base_model,
        help="hub id, local diffusers folder, or single .safetensors/.ckpt file",
    )
    parser.add_argument(
        "--base-model-config",
        default=defaults.base_model_config,
        help="local diffusers folder with the configs for a single-file base model (offline use)",
    )
    parser.add_argument(
        "--controlnet-dir",
        default=defaults.controlnet_dir,
        help="folder with local ControlNets named like control_v11p_sd15_canny: diffusers folders, "
        "or single .pth/.safetensors files as the A1111 extension keeps them",
    )
    parser.add_argument("--device", choices=DEVICES, default=defaults.device)
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default=defaults.dtype,
        help="weights' precision for real SD1.5 weights: auto is float16 on CUDA/MPS, float32 on "
        "CPU; bfloat16 is about twice as fast on CPUs with AVX512-BF16 or AMX",
    )
    parser.add_argument(
        "--scheduler", choices=SCHEDULER_NAMES, default=defaults.scheduler, help="default sampler"
    )
    parser.add_argument(
        "--safety-checker",
        action=argparse.BooleanOptionalAction,
        default=defaults.safety_checker,
        help="run the base model's NSFW safety checker when it has one",
    )
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument("--share", action=argparse.BooleanOptionalAction, default=defaults.share)
    parser.add_argument("--max-resolution", type=int, default=defaults.max_resolution)
    parser.add_argument("--max-images", type=int, default=defaults.max_images)
    parser.add_argument("--max-steps", type=int, default=defaults.max_steps)
    parser.add_argument(
        "--max-cached-controlnets", type=int, default=defaults.max_cached_controlnets
    )
    parser.add_argument("--queue-size", type=int, default=defaults.queue_size)
    return parser


def settings_from_cli(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from the environment, overridden by command-line flags."""
    defaults = settings_from_env(environ)
    args = build_parser(defaults).parse_args(argv)
    return defaults.with_overrides(**vars(args))
