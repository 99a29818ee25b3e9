"""The one place where configuration is read: environment variables with defaults, CLI overrides.

Every setting has an environment variable (for Hugging Face Spaces and containers) and a flag of
`python app.py`; a flag given on the command line wins, even over a variable that would not parse.
Every value is checked at start against its allowed range: a bad one is a `SettingError` whose one-line
message names the flag or variable it came from and the range, never a silent clamp.
On Hugging Face Spaces (`SPACE_ID` set), or with `--hosted`, smaller hosted defaults apply to the
settings the operator did not set.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

BACKENDS = ("auto", "real", "toy", "tiny")
DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = ("auto", "float32", "bfloat16", "float16")

SCHEDULER_NAMES = ("UniPC", "DPM++ 2M", "DPM++ 2M Karras", "Euler a", "Euler", "DDIM", "LCM")
# The sampler of few-step mode: it runs the UNet with the few-step LoRA fused in (few_step_lora).
FEW_STEP_SCHEDULER = "LCM"
# SDXL's VAE fine-tuned not to overflow in float16 (its own must decode in float32).
SDXL_FP16_VAE = "madebyollin/sdxl-vae-fp16-fix"
VAE_AUTO, VAE_BASE = "auto", "base"

DEFAULT_FEW_STEP_LORA = "latent-consistency/lcm-lora-sdv1-5"
# What the default stands for with an SDXL base (an SD1.5 LoRA does not fit SDXL's UNet).
DEFAULT_FEW_STEP_LORA_SDXL = "latent-consistency/lcm-lora-sdxl"

DEFAULT_BASE_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
HARD_MAX_RESOLUTION = 1024
HARD_MAX_IMAGES = 8
HARD_MAX_STEPS = 100
HARD_MAX_UPLOAD_MB = 500
# Pillow's own decompression-bomb limit (Image.MAX_IMAGE_PIXELS): above it Pillow warns, then refuses.
HARD_MAX_IMAGE_PIXELS = 89_478_485


@dataclass(frozen=True)
class Settings:
    """All runtime configuration of the app and the core.

    backend: "real" loads SD1.5 + ControlNet 1.1 weights (hub id, local folder or single file);
    "toy" runs the small model trained in this repo; "tiny" runs random SD1.5-shaped weights (tests);
    "auto" uses real weights when they can be loaded and falls back to the toy model otherwise.
    Limits (see LIMITS) are checked on construction: a value out of range raises `SettingError`.
    max_resolution caps a request's short side; with an SDXL base, whose sizes are its trained
    aspect buckets around 1024², max_resolution_sdxl caps the side of a square of the same area;
    max_upload_mb caps one uploaded file; max_image_pixels caps an image's width × height, read from
    its header before decoding; cache_max_age (seconds) is how old an output or upload file may get
    before the sweeper, which runs every cache_sweep_interval seconds, deletes it;
    compile runs the UNet and ControlNets through torch.compile (see `compiled`): fastest on a GPU
    once compiled, but the first load of each model compiles for tens of seconds;
    low_vram decodes the images one at a time and in tiles (the VAE's peak memory, the largest of a
    run at high resolutions and in sweeps, no longer grows with them);
    offload keeps the models in CPU memory and moves each stage of a run (text encoders, UNet and
    ControlNets, VAE) to the GPU only while it runs (see `offload`; not with compile);
    few_step_lora is the LoRA (hub id, local folder or .safetensors file) that the LCM sampler's
    few-step mode fuses into a copy of the UNet; vae replaces the base model's VAE (hub id or local
    folder; "base" keeps its own; "auto", the default, is SDXL_FP16_VAE where the base is SDXL and
    runs in float16, whose own VAE would have to run in float32, and the base's own otherwise);
    preview_concurrency is how many map previews and recipe loads run at once; hosted says the app is
    served to the public (Spaces); mcp serves gradio's MCP server next to the app.
    """

    backend: str = "auto"
    base_model: str = DEFAULT_BASE_MODEL
    base_model_config: str | None = None
    controlnet_dir: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    scheduler: str = "UniPC"
    few_step_lora: str = DEFAULT_FEW_STEP_LORA
    vae: str = "auto"
    compile: bool = False
    low_vram: bool = False
    offload: bool = False
    safety_checker: bool = True
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    max_resolution: int = 768
    max_resolution_sdxl: int = 1024
    max_images: int = 4
    max_steps: int = 50
    max_cached_controlnets: int = 3
    queue_size: int = 16
    max_upload_mb: int = 20
    max_image_pixels: int = 25_000_000
    cache_max_age: int = 3600
    cache_sweep_interval: int = 600
    preview_concurrency: int = 2
    hosted: bool = False
    mcp: bool = False

    def __post_init__(self) -> None:
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise SettingError(name, f"must be one of {choices}, got {getattr(self, name)!r}")
        for name, limit in LIMITS.items():
            limit.check(name, getattr(self, name))
        if self.offload and self.compile:
            raise SettingError(
                "offload",
                "cannot be combined with compile: compiled models replay CUDA graphs that keep "
                "their weights on the GPU",
            )

    @property
    def max_upload_bytes(self) -> int:
        """max_upload_mb in bytes, as gradio counts a megabyte (1024²)."""
        return self.max_upload_mb * 1024 * 1024

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)


class SettingError(ValueError):
    """A setting with a bad value. `field` is the Settings field; `source` the flag or environment
    variable the value came from, when known, which the one-line message starts with; `note` an
    ending such as how to override it."""

    def __init__(self, field: str, problem: str, source: str | None = None, note: str = "") -> None:
        self.field, self.problem, self.source, self.note = field, problem, source, note
        message = f"{field} {problem}{note}"
        super().__init__(f"{source}: {message}" if source else message)

    def named(self, source: str) -> SettingError:
        return SettingError(self.field, self.problem, source, _source_note(self.field, source))


def _source_note(field: str, source: str) -> str:
    """For a value from the environment: the flag that would override it."""
    return f" (a {flag_of(field)} flag overrides it)" if not source.startswith("--") else ""


@dataclass(frozen=True)
class Limit:
    """The allowed values of an integer setting: low..high (no upper end when None), in steps of
    `multiple`."""

    low: int
    high: int | None = None
    multiple: int = 1

    def describe(self) -> str:
        what = f"a multiple of {self.multiple} " if self.multiple > 1 else ""
        if self.high is None:
            return f"{what or 'an integer '}of at least {self.low}"
        return f"{what or 'an integer '}from {self.low} to {self.high}"

    def check(self, name: str, value: object) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, np.integer))
            or value < self.low
            or (self.high is not None and value > self.high)
            or value % self.multiple
        ):
            raise SettingError(name, f"must be {self.describe()}, got {value!r}")


CHOICES: dict[str, tuple[str, ...]] = {
    "backend": BACKENDS,
    "scheduler": SCHEDULER_NAMES,
    "device": DEVICES,
    "dtype": DTYPES,
}

LIMITS: dict[str, Limit] = {
    "port": Limit(1, 65535),
    "max_resolution": Limit(64, HARD_MAX_RESOLUTION, multiple=64),
    "max_resolution_sdxl": Limit(64, HARD_MAX_RESOLUTION, multiple=64),
    "max_images": Limit(1, HARD_MAX_IMAGES),
    "max_steps": Limit(1, HARD_MAX_STEPS),
    "max_cached_controlnets": Limit(1),
    "queue_size": Limit(1),
    "max_upload_mb": Limit(1, HARD_MAX_UPLOAD_MB),
    "max_image_pixels": Limit(64 * 64, HARD_MAX_IMAGE_PIXELS),
    "cache_max_age": Limit(60),
    "cache_sweep_interval": Limit(10),
    "preview_concurrency": Limit(1, 16),
}

# Smaller limits for a public server, applied only to the settings the operator did not set.
HOSTED_DEFAULTS: dict[str, object] = {
    "host": "0.0.0.0",
    "max_images": 2,
    "max_steps": 30,
    "max_resolution": 768,
    "queue_size": 8,
    "max_upload_mb": 10,
    "max_image_pixels": 16_000_000,
    "cache_max_age": 1800,
    "cache_sweep_interval": 300,
}


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
    "few_step_lora": "CONTROLNET_FEW_STEP_LORA",
    "vae": "CONTROLNET_VAE",
    "compile": "CONTROLNET_COMPILE",
    "low_vram": "CONTROLNET_LOW_VRAM",
    "offload": "CONTROLNET_OFFLOAD",
    "safety_checker": "CONTROLNET_SAFETY_CHECKER",
    "host": "CONTROLNET_HOST",
    "port": "CONTROLNET_PORT",
    "share": "CONTROLNET_SHARE",
    "max_resolution": "CONTROLNET_MAX_RESOLUTION",
    "max_resolution_sdxl": "CONTROLNET_MAX_RESOLUTION_SDXL",
    "max_images": "CONTROLNET_MAX_IMAGES",
    "max_steps": "CONTROLNET_MAX_STEPS",
    "max_cached_controlnets": "CONTROLNET_MAX_CACHED_CONTROLNETS",
    "queue_size": "CONTROLNET_QUEUE_SIZE",
    "max_upload_mb": "CONTROLNET_MAX_UPLOAD_MB",
    "max_image_pixels": "CONTROLNET_MAX_IMAGE_PIXELS",
    "cache_max_age": "CONTROLNET_CACHE_MAX_AGE",
    "cache_sweep_interval": "CONTROLNET_CACHE_SWEEP_INTERVAL",
    "preview_concurrency": "CONTROLNET_PREVIEW_CONCURRENCY",
    "hosted": "CONTROLNET_HOSTED",
    "mcp": "CONTROLNET_MCP",
}

# Read when our own variable is absent: Hugging Face Spaces and containers set gradio's.
FALLBACK_ENV_VARS: dict[str, str] = {
    "host": "GRADIO_SERVER_NAME",
    "port": "GRADIO_SERVER_PORT",
    "mcp": "GRADIO_MCP_SERVER",
}

# Hugging Face Spaces sets it in every Space: its presence makes `hosted` default to on.
SPACES_ENV_VAR = "SPACE_ID"

_OPTIONAL_PATHS = ("base_model_config", "controlnet_dir")
_DEFAULTS = Settings()


def flag_of(name: str) -> str:
    """The command-line flag of a Settings field: `max_steps` -> `--max-steps`."""
    return "--" + name.replace("_", "-")


def env_values(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """The raw text of every setting the environment sets: field -> (variable, text), unparsed.

    An empty value (an unfilled .env or compose template) counts as unset: the fallback variable
    is read instead, or else the default stays.
    """
    found: dict[str, tuple[str, str]] = {}
    for name, variable in ENV_VARS.items():
        for candidate in (variable, FALLBACK_ENV_VARS.get(name)):
            if candidate and environ.get(candidate, "").strip():
                found[name] = (candidate, environ[candidate].strip())
                break
    return found


def parse_env_value(name: str, variable: str, text: str) -> object:
    """The value of field `name` from its variable's text; SettingError naming the variable."""
    default = getattr(_DEFAULTS, name)
    if isinstance(default, bool):
        try:
            return parse_flag(name, text)
        except ValueError:
            error = SettingError(name, f"must be true or false, got {text!r}")
            raise error.named(variable) from None
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            error = SettingError(name, f"must be {LIMITS[name].describe()}, got {text!r}")
            raise error.named(variable) from None
    return text


def hosted_by_default(environ: Mapping[str, str]) -> bool:
    """True on Hugging Face Spaces, where SPACE_ID is set."""
    return bool(environ.get(SPACES_ENV_VAR, "").strip())


def _help(name: str, text: str = "") -> str:
    default = getattr(_DEFAULTS, name)
    shown = ("on" if default else "off") if isinstance(default, bool) else default
    parts = [f"env {ENV_VARS[name]}"]
    if name in FALLBACK_ENV_VARS:
        parts[0] += f" or {FALLBACK_ENV_VARS[name]}"
    if name in LIMITS:
        parts.append(LIMITS[name].describe().replace("an integer ", ""))
    parts.append(f"default {shown}" if shown is not None else "no default")
    if name in HOSTED_DEFAULTS and HOSTED_DEFAULTS[name] != default:
        parts.append(f"hosted {HOSTED_DEFAULTS[name]}")
    return f"{text} [{'; '.join(parts)}]".strip()


class _Parser(argparse.ArgumentParser):
    """argparse's parser with a one-line error (no usage block of 30 flags above it)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The flags of `python app.py`. Flags not given stay out of the parsed namespace, so
    `settings_from_cli` can tell them from the environment's values and the defaults."""
    parser = _Parser(
        description="ControlNet demo suite: every ControlNet modality in one tabbed app. "
        "Every flag also has an environment variable; a flag given here wins.",
        argument_default=argparse.SUPPRESS,
    )
    yes_no = argparse.BooleanOptionalAction

    def add(name: str, text: str = "", **options: Any) -> None:
        if isinstance(getattr(_DEFAULTS, name), bool):
            options["action"] = yes_no
        elif isinstance(getattr(_DEFAULTS, name), int):
            options.update(type=int, metavar="N")
        parser.add_argument(flag_of(name), help=_help(name, text), **options)

    add(
        "backend",
        "real: SD1.5 + ControlNet 1.1 weights; toy: small model trained in this repo (offline); "
        "tiny: random SD1.5-shaped weights (tests); auto: real, else toy",
        choices=BACKENDS,
    )
    add("base_model", "hub id, local diffusers folder, or single .safetensors/.ckpt file")
    add(
        "base_model_config",
        "local diffusers folder with the configs for a single-file base model (offline use)",
    )
    add(
        "controlnet_dir",
        "folder with local ControlNets named like control_v11p_sd15_canny or "
        "controlnet-union-sdxl-1.0: diffusers folders, or single .pth/.safetensors files as "
        "A1111 and ComfyUI keep them",
    )
    add("device", choices=DEVICES)
    add(
        "dtype",
        "weights' precision for real SD1.5 weights: auto is float16 on CUDA/MPS, bfloat16 on "
        "CPUs with AVX512-BF16 or AMX (about twice as fast as float32 there), float32 on other "
        "CPUs",
        choices=DTYPES,
    )
    add("scheduler", "default sampler", choices=SCHEDULER_NAMES)
    add(
        "compile",
        "torch.compile the UNet and ControlNets (CUDA graphs on a GPU): the fastest path, after "
        "a warm-up of tens of seconds per model at first load (cached on disk for later starts)",
    )
    add(
        "low_vram",
        "for cards with about 8 GB: the VAE decodes one image at a time, in tiles, so a sweep or a "
        "768² image needs no more memory than one 512² image",
    )
    add(
        "offload",
        "for cards with 8-12 GB: models wait in CPU memory and each stage of a run (text "
        "encoders, UNet with the request's ControlNets, VAE) moves to the GPU only while it "
        "runs; runs take turns, and each moves its models (seconds per image)",
    )
    add(
        "few_step_lora",
        "few-step LoRA for the LCM sampler (Fast mode, 4-8 steps): hub id, local diffusers "
        "LoRA folder, or a .safetensors file",
    )
    add(
        "vae",
        f"the VAE: '{VAE_AUTO}' is {SDXL_FP16_VAE} for an SDXL base in float16 (a GPU; its own "
        f"VAE would decode in float32) and the base's own otherwise; '{VAE_BASE}' the base's "
        "own; or a hub id or local diffusers folder",
    )
    add("safety_checker", "run the base model's NSFW safety checker when it has one")
    add("host", "address to listen on; 0.0.0.0 serves a network")
    add("port")
    add("share", "gradio share link")
    add("max_resolution", "largest short side of a request, in pixels")
    add("max_resolution_sdxl", "with an SDXL base: largest side of a square of a request's area")
    add("max_images", "images per request")
    add("max_steps", "denoising steps per request")
    add("max_cached_controlnets", "ControlNets kept in memory")
    add("queue_size", "waiting requests before new ones are refused")
    add("max_upload_mb", "largest uploaded file, in MB")
    add("max_image_pixels", "largest image (width × height), checked before decoding")
    add("cache_max_age", "seconds an output or upload file is kept")
    add("cache_sweep_interval", "seconds between sweeps of old files")
    add("preview_concurrency", "map previews and recipe loads running at once")
    add("hosted", "hosted defaults for a public server (on when SPACE_ID is set)")
    add("mcp", "serve gradio's MCP server (needs the gradio[mcp] extra)")
    return parser


def settings_from_cli(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from command-line flags, then environment variables, then defaults.

    A flag given on the command line wins over the variable of the same setting, which is then not
    even parsed. Hosted defaults (HOSTED_DEFAULTS) fill what neither sets when `hosted` is on: from
    CONTROLNET_HOSTED or --[no-]hosted, or else on when SPACE_ID is set. A bad value raises a
    SettingError naming its flag or variable; a flag argparse cannot read exits (status 2) with a
    one-line message.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, object] = dict(vars(build_parser().parse_args(argv)))
    sources = {name: flag_of(name) for name in values}
    for name, (variable, text) in env_values(environ).items():
        if name not in values:
            values[name] = parse_env_value(name, variable, text)
            sources[name] = variable
    for name in _OPTIONAL_PATHS:  # an empty folder or config means none
        values[name] = values.get(name) or None
    if values.setdefault("hosted", hosted_by_default(environ)):
        for name, value in HOSTED_DEFAULTS.items():
            values.setdefault(name, value)
    try:
        return Settings(**values)
    except SettingError as error:
        raise error.named(sources[error.field]) if error.field in sources else error from None


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from environment variables (see ENV_VARS), defaults for the rest."""
    return settings_from_cli([], environ)


def check_can_start(settings: Settings) -> None:
    """What only this machine can tell, checked before the server starts: the address can be
    listened on (the port is free, the host is one of this machine's), and the MCP extra is
    installed when `mcp` is on. SettingError with a one-line message naming the flag otherwise."""
    check_address(settings.host, settings.port)
    if settings.mcp and importlib.util.find_spec("mcp") is None:
        raise SettingError(
            "mcp",
            'needs gradio\'s MCP extra: pip install "gradio[mcp]"',
            "--mcp/CONTROLNET_MCP",
        )


def check_address(host: str, port: int) -> None:
    """SettingError naming --port (busy, or a privileged port) or --host (an address that is not
    this machine's) when host:port cannot be listened on. Binds a socket as the server will."""
    port_source = f"--port/{ENV_VARS['port']}"
    host_source = f"--host/{ENV_VARS['host']}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or error
        problem = f"{host!r} is not an address of this machine ({reason})"
        raise SettingError("host", problem, host_source) from None
    with socket.socket(family, kind, proto) as sock:
        # As uvicorn does: a port whose old connections linger in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                problem = (
                    f"{port} is in use on {host}: stop the other server or choose another port"
                )
                raise SettingError("port", problem, port_source) from None
            if error.errno == errno.EACCES:
                problem = f"{port} needs privileges to listen on (ports below 1024 usually do)"
                raise SettingError("port", problem, port_source) from None
            if error.errno == errno.EADDRNOTAVAIL:
                problem = f"{host} is not an address of this machine ({error.strerror})"
            else:
                problem = f"{host} cannot be listened on at port {port} ({error.strerror})"
            raise SettingError("host", problem, host_source) from None
