"""The compiled path (`--compile`): the UNet and the ControlNets through torch.compile.

What it does to each model, once, at load: channels-last memory, fused QKV projections (one matmul
instead of three in every attention), PyTorch's SDPA attention (diffusers' default), then
`torch.compile` — with CUDA graphs on CUDA ("reduce-overhead"), which removes the per-kernel launch
cost that bounds SD1.5 at batch 1 on a large GPU.

torch.compile specialises on shapes: a new batch size or resolution compiles again (tens of seconds).
The batch of a UNet or ControlNet call is 1–2 rows per image (classifier-free guidance) times the
variants of a comparison or sweep, so `Compiled` pads it up to the next of a few sizes
(BATCH_BUCKETS) and slices the result: a user's second request, with another image count, runs on
the graph compiled for the first. Sizes: the first call (the warm-up at load, the size a first request
most likely asks for) compiles for its size exactly; a call at any other size marks its images'
height and width dynamic, so one more graph serves every other size an upload's aspect ratio or the
resolution slider gives (without it, each would compile anew: 17 sizes at 512 alone). From then on
the warm-up's size runs on that graph too (torch tries its newest graph first), and with CUDA graphs
each size is recorded once more (milliseconds, not a compile); `bench.gpu --other-sizes` measures
the it/s then. Inductor's on-disk cache (TORCHINDUCTOR_CACHE_DIR, kept between runs) makes the next
server start reuse the compiled kernels.
Padding rows are copies of the last row, so a padded call computes nothing the real rows depend on.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)
# Recompiles allowed per model before torch falls back to running it eagerly: one per resolution
# bucket a server sees, with room to spare (torch's default of 8 would silently stop compiling).
RECOMPILE_LIMIT = 64
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "controlnet-demo" / "inductor"

_setup_lock = threading.Lock()
# torch keeps CUDA graphs per thread (cudagraph_trees' thread-local tree managers): called from
# each of a server's many worker threads, every graph would be recorded again, in a memory pool of
# its own. All graph calls go through this one thread instead (the GPU runs one call at a time
# anyway); the hand-over costs microseconds against milliseconds per call.
_graph_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cuda-graphs")


def bucket(rows: int) -> int:
    """The batch size a call of `rows` rows runs at: the next of BATCH_BUCKETS (or `rows`)."""
    return next((size for size in BATCH_BUCKETS if size >= rows), rows)


def configure_cache() -> Path:
    """Point Inductor's compiled-kernel cache at a folder that outlives the process (unless the
    operator chose one with TORCHINDUCTOR_CACHE_DIR), and allow enough recompiles."""
    import torch._inductor.config

    folder = Path(os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(DEFAULT_CACHE_DIR)))
    folder.mkdir(parents=True, exist_ok=True)
    with _setup_lock:
        torch._dynamo.config.cache_size_limit = max(
            torch._dynamo.config.cache_size_limit, RECOMPILE_LIMIT
        )
        # A graph with dynamic sides records a CUDA graph per size: as many as sizes are seen,
        # which torch would otherwise warn about loudly from the 9th on.
        torch._inductor.config.triton.cudagraph_dynamic_shape_warn_limit = RECOMPILE_LIMIT
    return folder


def optimize(model: torch.nn.Module) -> torch.nn.Module:
    """channels-last and fused QKV projections: the same function, fewer and larger kernels."""
    model = model.to(memory_format=torch.channels_last)
    if hasattr(model, "fuse_qkv_projections"):
        model.fuse_qkv_projections()
    return model


class Compiled(torch.nn.Module):
    """A UNet or ControlNet behind torch.compile, called like the model itself.

    `eager` is the model (for what must not run compiled: hooks of the inside view, training).
    Calls are padded to a batch bucket (see `bucket`); outputs are sliced back and copied out of
    CUDA graphs' memory, which the next call reuses. `static_size` is the (height, width) of the
    first call's latents; other sizes compile one graph with dynamic sides, used from then on.
    """

    def __init__(self, model: torch.nn.Module, backend: str = "inductor") -> None:
        super().__init__()
        self.static_size: tuple[int, int] | None = None
        self.eager = optimize(model)
        self.graphs = model.device.type == "cuda" and backend == "inductor"
        self.compiled = torch.compile(
            self.eager,
            backend=backend,
            mode="reduce-overhead" if self.graphs else None,
            dynamic=False,
        )

    @property
    def config(self) -> Any:
        return self.eager.config

    @property
    def dtype(self) -> torch.dtype:
        return self.eager.dtype

    @property
    def device(self) -> torch.device:
        return self.eager.device

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states, **kwargs):
        rows = sample.shape[0]
        size = bucket(rows)
        spatial = (sample.shape[-2], sample.shape[-1])
        if self.static_size is None:
            self.static_size = spatial
        any_size = spatial != self.static_size

        def pad(value):
            # Also without padding, every input is made contiguous: a graph is compiled for its
            # inputs' strides too, and a broadcast control image (stride 0) would compile anew.
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == rows:
                if size > rows:
                    value = torch.cat([value, value[-1:].expand(size - rows, *value.shape[1:])])
                value = value.contiguous()
                if any_size and value.dim() == 4:  # latents, control images, residuals
                    torch._dynamo.maybe_mark_dynamic(value, 2)
                    torch._dynamo.maybe_mark_dynamic(value, 3)
                return value
            if isinstance(value, (list, tuple)):
                return type(value)(pad(item) for item in value)
            if isinstance(value, dict):  # SDXL's added conditions
                return {name: pad(item) for name, item in value.items()}
            return value

        if isinstance(timestep, torch.Tensor):
            # Samplers give integer (UniPC, DDIM) or float (Euler) timesteps, and a graph is
            # compiled per dtype; the models take either and embed it in float32 anyway.
            timestep = timestep.to(torch.float32)
        sample, timestep, encoder_hidden_states = map(
            pad, (sample, timestep, encoder_hidden_states)
        )
        kwargs = {name: pad(value) for name, value in kwargs.items()}
        if not self.graphs:
            return _cut(self.compiled(sample, timestep, encoder_hidden_states, **kwargs), rows)
        return _graph_thread.submit(
            self._replay, sample, timestep, encoder_hidden_states, kwargs, rows
        ).result()

    def _replay(self, sample, timestep, encoder_hidden_states, kwargs, rows: int):
        # Each call is a step of its own: its outputs are copied out before the next one runs.
        torch.compiler.cudagraph_mark_step_begin()
        with torch.inference_mode():
            output = self.compiled(sample, timestep, encoder_hidden_states, **kwargs)
            return _cut(output, rows)


def _cut(value, rows: int):
    """The first `rows` rows of every tensor of a model's output, as tensors of their own."""
    if isinstance(value, torch.Tensor):
        return value[:rows].clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_cut(item, rows) for item in value)
    if hasattr(value, "to_tuple"):  # a diffusers output object (return_dict=True)
        return type(value)(*(_cut(item, rows) for item in value.to_tuple()))
    return value


def eager(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself, compiled or not."""
    return model.eager if isinstance(model, Compiled) else model


FUSED_PROJECTIONS = ("to_qkv", "to_kv", "to_added_qkv")


def unfused_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` (compiled or not) as it was before `optimize` fused its projections: the
    layout other code expects (a ControlNet built from a UNet, a LoRA loaded into to_q/to_k/to_v).
    The fused layers are dropped; fusing again remakes them from the separate ones."""
    import copy

    from controlnet_core.models import drop_hooks

    model = copy.deepcopy(eager(model))
    drop_hooks(model)
    if getattr(model, "original_attn_processors", None) is not None:
        model.unfuse_qkv_projections()
        model.original_attn_processors = None
    for module in model.modules():
        if getattr(module, "fused_projections", False):
            for name in FUSED_PROJECTIONS:
                if hasattr(module, name):
                    delattr(module, name)
            module.fused_projections = False
    return model.to(memory_format=torch.contiguous_format)


def warm_up(unet: Compiled, controlnet: Compiled | None, size: int, rows: int = 2) -> None:
    """Compile the graphs a first `size`² image runs (one image: 2 rows with guidance, 1 without):
    the UNet alone (a plain step), and with a ControlNet, the ControlNet and the UNet fed its
    residuals. SDXL's get its added conditions (pooled text, size ids), a union ControlNet one
    map whose control type is a tensor (as `sampling` passes it to a compiled model)."""
    side = size // 8
    options = {"device": unet.device, "dtype": unet.dtype}
    sample = torch.randn(rows, unet.config.in_channels, side, side, **options)
    timestep = torch.tensor(999, device=unet.device)
    text = torch.zeros(rows, 77, unet.config.cross_attention_dim, **options)
    added = None
    if getattr(unet.config, "addition_embed_type", None) == "text_time":
        ids = 6  # original size, crop corner, target size
        pooled = unet.config.projection_class_embeddings_input_dim
        pooled -= ids * unet.config.addition_time_embed_dim
        added = {
            "text_embeds": torch.zeros(rows, pooled, **options),
            "time_ids": torch.zeros(rows, ids, **options),
        }
    with torch.inference_mode():
        if controlnet is None:
            unet(
                sample,
                timestep,
                encoder_hidden_states=text,
                added_cond_kwargs=added,
                return_dict=False,
            )
            return
        condition = torch.zeros(rows, 3, size, size, **options)
        extra: dict = {}
        from controlnet_core.sampling import is_union

        if is_union(controlnet):  # a union model: one map, its type a tensor
            control_type = torch.zeros(rows, controlnet.config.num_control_type, **options)
            control_type[:, 0] = 1
            condition = [condition]
            index = [torch.tensor([0], device=unet.device)]
            extra = {"control_type": control_type, "control_type_idx": index}
        down, mid = controlnet(
            sample,
            timestep,
            encoder_hidden_states=text,
            controlnet_cond=condition,
            conditioning_scale=1.0,
            guess_mode=False,
            added_cond_kwargs=added,
            return_dict=False,
            **extra,
        )
        unet(
            sample,
            timestep,
            encoder_hidden_states=text,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            added_cond_kwargs=added,
            return_dict=False,
        )
