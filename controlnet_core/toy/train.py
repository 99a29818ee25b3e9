"""Train the toy Stable Diffusion and toy ControlNets from a fixed seed on 2 CPU cores.

Stages, as in the ControlNet paper scaled down:
1. autoencoder (TAESD's architecture) on whole images: L1 with shape pixels weighted up, an
   image-gradient L1, an MSE of 4×4-pixel mean colours and a small penalty on the latents' size;
2. UNet + text encoder on the precomputed latents (epsilon prediction, the shipped linear noise
   schedule, 10 % of captions dropped so classifier-free guidance works, min-SNR loss weighting, EMA);
3. ControlNets (``ControlNetModel.from_unet``: a trainable copy of the encoder joined by zero
   convolutions) with 50 % of the prompts dropped: ``controlnet_edges`` on a mix of canny maps and
   scribble strokes, optionally ``controlnet_regions`` on region maps. The UNet encoder and middle
   stay frozen; its decoder trains along at a lower rate, as the official ControlNet does with
   ``sd_locked=False``, on controlled samples and a quarter of plain ones. A small colour-binding
   loss (``binding.py``) teaches the decoder's cross-attention, through the ControlNet's
   residuals, which outline is which shape word, so each shape gets its own colour.

``python -m controlnet_core.toy.train`` reproduces the shipped weights; ``--smoke`` runs a few steps
on a tiny dataset (what CI runs). Losses go to ``<out>/train_log.jsonl`` and stdout.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import pathlib
import time

import numpy as np
import torch
import torch.nn.functional as F

from controlnet_core.toy import TOY_WEIGHTS_DIR, binding, build
from controlnet_core.toy.data import generate_dataset


@dataclasses.dataclass
class TrainConfig:
    """Everything that determines the trained weights (together with the code)."""

    seed: int = 0
    samples: int = 12000
    batch_size: int = 32
    ae_steps: int = 2500
    ae_batch_size: int = 8
    ae_lr: float = 2e-3
    ae_color_weight: float = 1.0
    ae_shape_weight: float = 4.0
    ae_latent_weight: float = 1e-3
    unet_steps: int = 5000
    unet_lr: float = 1e-3
    caption_dropout: float = 0.1
    edges_steps: int = 3000
    regions_steps: int = 0
    controlnet_lr: float = 1e-3
    controlnet_caption_dropout: float = 0.5
    # Cross-attention in the ControlNet's 16×16 block too (``build.build_controlnet``).
    controlnet_attention_16: bool = False
    # The official ControlNet's ``sd_locked=False``: also train the UNet decoder (up blocks and
    # output layers) with the ControlNet, at this learning rate (0 keeps the base model locked).
    decoder_lr: float = 3e-4
    # Share of ControlNet-stage samples trained without the ControlNet while the decoder is
    # unlocked, so the base model stays a good plain text-to-image model (strength 0).
    decoder_plain_fraction: float = 0.25
    scribble_fraction: float = 0.5
    # Weight of the colour-binding loss in the ControlNet stage (``binding.binding_loss``): the
    # UNet decoder's cross-attention at each shape's cells should pick that shape's kind word.
    binding_weight: float = 0.005
    # bf16 autocast for the ControlNet stage's forward passes (weights, optimiser and EMA stay
    # float32): 0.36 s instead of 0.46 s a step on this CPU (AVX512-BF16), so 3000 steps fit.
    controlnet_bf16: bool = True
    ema_decay: float = 0.998
    min_snr_gamma: float = 5.0
    workers: int = 2


SMOKE = {
    "samples": 48,
    "batch_size": 8,
    "ae_steps": 2,
    "ae_batch_size": 4,
    "unet_steps": 2,
    "edges_steps": 2,
    "regions_steps": 2,
    "workers": 1,
}


class Logger:
    """Writes one JSON object per line to ``train_log.jsonl`` and a short line to stdout."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.start = time.time()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("w")

    def log(self, **record) -> None:
        record["elapsed_s"] = round(time.time() - self.start, 1)
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        print(
            " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
            ),
            flush=True,
        )


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10 %."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of parameters, with the usual warm-up of the decay."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.shadow = copy.deepcopy(module).eval().requires_grad_(False)
        self.decay = decay
        self.step = 0

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        self.step += 1
        decay = min(self.decay, (1 + self.step) / (10 + self.step))
        for s, p in zip(self.shadow.parameters(), module.parameters(), strict=True):
            s.lerp_(p.detach(), 1 - decay)


def _to_unit(images_u8: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1] (the VAE's input range)."""
    return torch.from_numpy(images_u8).permute(0, 3, 1, 2).float() / 127.5 - 1


def _gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def _shape_weighted_l1(recon: torch.Tensor, x: torch.Tensor, shape_weight: float) -> torch.Tensor:
    """L1 with pixels that differ from the corner (background) colour weighted ``shape_weight``×.

    Backgrounds cover ~85 % of the pixels; unweighted, the autoencoder learns them first and keeps
    shapes desaturated (red and yellow decoded as orange, green as gray) for thousands of steps.
    """
    corner = x[..., :1, :1]
    on_shape = ((x - corner).abs().amax(dim=1, keepdim=True) > 0.05).float()
    weight = 1 + (shape_weight - 1) * on_shape
    return ((recon - x).abs() * weight).mean() / weight.mean()


def _color_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MSE of 4×4-pixel means: flat colours must come back right, not just edges."""
    return F.mse_loss(F.avg_pool2d(a, 4), F.avg_pool2d(b, 4))


def train_autoencoder(cfg: TrainConfig, images: np.ndarray, logger: Logger, device="cpu"):
    """Stage 1: fit the ×4 autoencoder on whole 64×64 images."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 1])
    vae = build.build_vae().to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.ae_lr, weight_decay=0.0)
    for step in range(cfg.ae_steps):
        for group in opt.param_groups:
            group["lr"] = cfg.ae_lr * _lr_factor(step, cfg.ae_steps, warmup=min(50, cfg.ae_steps))
        x = _to_unit(images[rng.integers(len(images), size=cfg.ae_batch_size)]).to(device)
        z = vae.encode(x).latents
        recon = vae.decode(z).sample
        l1 = _shape_weighted_l1(recon, x, cfg.ae_shape_weight)
        grad = _gradient_l1(recon, x)
        color = _color_mse(recon, x)
        # Keeps latents well inside the decoder's soft clamp (tanh(z / 3) * 3).
        size = z.pow(2).mean()
        loss = l1 + grad + cfg.ae_color_weight * color + cfg.ae_latent_weight * size
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == cfg.ae_steps - 1:
            logger.log(
                stage="autoencoder",
                step=step,
                loss=loss.item(),
                l1=l1.item(),
                grad=grad.item(),
                color=color.item(),
                latent_rms=size.sqrt().item(),
            )
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def encode_latents(vae, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """Latents of all images, on the autoencoder's device (it is frozen from here on)."""
    device = next(vae.parameters()).device
    out = [
        vae.encode(_to_unit(images[i : i + batch]).to(device)).latents
        for i in range(0, len(images), batch)
    ]
    return torch.cat(out)


def _tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def _noisy_batch(scheduler, latents: torch.Tensor, gamma: float):
    """Sample timesteps and noise; return noisy latents, the prediction target and min-SNR-gamma
    loss weights (``min(SNR, gamma) * |x0 error|^2``, whichever the scheduler's prediction type)."""
    noise = torch.randn_like(latents)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],))
    t = t.to(latents.device)
    noisy = scheduler.add_noise(latents, noise, t)
    alphas = scheduler.alphas_cumprod.to(latents.device)[t]
    snr = alphas / (1 - alphas)
    capped = torch.clamp(snr, max=gamma)
    if scheduler.config.prediction_type == "v_prediction":
        # |v error|^2 = (SNR + 1) |x0 error|^2
        return noisy, scheduler.get_velocity(latents, noise, t), t, capped / (snr + 1)
    # |epsilon error|^2 = SNR |x0 error|^2
    return noisy, noise, t, capped / snr


def _weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    per_sample = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
    return (per_sample * weight).mean()


def train_unet(
    cfg: TrainConfig,
    latents: torch.Tensor,
    input_ids: torch.Tensor,
    empty_ids: torch.Tensor,
    vocab: int,
    logger: Logger,
):
    """Stage 2: UNet + text encoder from scratch on the shipped noise schedule (``build.SCHEDULE``),
    dropping 10 % of captions for classifier-free guidance."""
    steps, lr = cfg.unet_steps, cfg.unet_lr
    torch.manual_seed(cfg.seed + 2)
    rng = np.random.default_rng([cfg.seed, 2])
    device = latents.device
    unet = build.build_unet().to(device).train()
    text_encoder = build.build_text_encoder(vocab).to(device).train()
    scheduler = build.train_scheduler()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    ema_unet, ema_text = EMA(unet, cfg.ema_decay), EMA(text_encoder, cfg.ema_decay)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * _lr_factor(step, steps, warmup=min(100, steps))
        idx = torch.from_numpy(rng.integers(len(latents), size=cfg.batch_size))
        ids = input_ids[idx].clone()
        drop = torch.from_numpy(rng.random(cfg.batch_size) < cfg.caption_dropout)
        ids[drop] = empty_ids
        noisy, target, t, weight = _noisy_batch(
            scheduler, latents[idx.to(device)], cfg.min_snr_gamma
        )
        hidden = text_encoder(ids.to(device))[0]
        pred = unet(noisy, t, hidden).sample
        loss = _weighted_mse(pred, target, weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema_unet.update(unet)
        ema_text.update(text_encoder)
        if step % 50 == 0 or step == steps - 1:
            logger.log(stage="unet", step=step, loss=loss.item())
    return ema_unet.shadow, ema_text.shadow


def decoder_parameters(unet) -> list[torch.nn.Parameter]:
    """The UNet decoder as the official ControlNet unlocks it (``sd_locked=False``): the up blocks
    and the output layers; the encoder and the middle block stay frozen."""
    modules = [unet.up_blocks, unet.conv_norm_out, unet.conv_out]
    return [p for m in modules for p in m.parameters()]


def _scatter_rows(rows: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """``rows`` placed at ``index`` of a zero tensor with ``size`` rows."""
    return rows.new_zeros((size,) + rows.shape[1:]).index_copy(0, index, rows)


def train_controlnet(
    cfg: TrainConfig,
    name: str,
    steps: int,
    unet,
    text_encoder,
    latents: torch.Tensor,
    input_ids: torch.Tensor,
    empty_ids: torch.Tensor,
    controls: list[np.ndarray],
    control_weights: list[float],
    logger: Logger,
    kind_cells: torch.Tensor | None = None,
    kind_positions: torch.Tensor | None = None,
):
    """Stage 3: train a ControlNet copy of the UNet's encoder; half of the prompts are dropped (paper).

    With ``cfg.decoder_lr > 0`` the UNet decoder trains too (``decoder_parameters``), on
    controlled samples and, for ``cfg.decoder_plain_fraction`` of them, on plain ones (ControlNet
    output left out) so strength 0 stays a good plain model. Returns ``(controlnet, unet)``: EMA
    weights; ``unet`` is the one passed in unless the decoder was unlocked.

    With ``cfg.binding_weight > 0``, ``kind_cells`` (N, 64: the kind per 8×8 latent cell, from
    ``binding.kind_cells``) and ``kind_positions`` (N, 4: ``binding.kind_word_positions``) add the
    colour-binding loss on controlled samples whose prompt was kept.
    """
    seed_offset = {"edges": 3, "regions": 4}[name]
    torch.manual_seed(cfg.seed + seed_offset)
    rng = np.random.default_rng([cfg.seed, seed_offset])
    device = latents.device
    unet.requires_grad_(False).eval()
    text_encoder.requires_grad_(False).eval()
    controlnet = build.build_controlnet(unet, cfg.controlnet_attention_16).to(device).train()
    scheduler = build.train_scheduler()
    groups = [{"params": list(controlnet.parameters()), "base_lr": cfg.controlnet_lr}]
    unlocked = cfg.decoder_lr > 0
    if unlocked:
        unet = copy.deepcopy(unet)
        decoder = decoder_parameters(unet)
        for param in decoder:
            param.requires_grad_(True)
        unet.train()
        groups.append({"params": decoder, "base_lr": cfg.decoder_lr})
        ema_unet = EMA(unet, cfg.ema_decay)
    trainable = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups, lr=cfg.controlnet_lr, weight_decay=0.01)
    ema = EMA(controlnet, cfg.ema_decay)
    bind = cfg.binding_weight > 0
    if bind:
        if kind_cells is None or kind_positions is None:
            raise ValueError("binding_weight > 0 needs kind_cells and kind_positions")
        # After the EMA copies: the recording processors stay on the training modules only.
        attention, previous_processors = binding.record_decoder_attention(unet)
    for step in range(steps):
        factor = _lr_factor(step, steps, warmup=min(100, steps))
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * factor
        idx_np = rng.integers(len(latents), size=cfg.batch_size)
        idx = torch.from_numpy(idx_np)
        source = rng.choice(len(controls), size=cfg.batch_size, p=control_weights)
        cond = np.stack([controls[s][i] for s, i in zip(source, idx_np, strict=True)])
        if cond.ndim == 3:
            cond = np.repeat(cond[..., None], 3, axis=3)
        cond_t = torch.from_numpy(cond).permute(0, 3, 1, 2).float().to(device) / 255.0
        ids = input_ids[idx].clone()
        drop = torch.from_numpy(rng.random(cfg.batch_size) < cfg.controlnet_caption_dropout)
        ids[drop] = empty_ids
        noisy, target, t, weight = _noisy_batch(
            scheduler, latents[idx.to(device)], cfg.min_snr_gamma
        )
        with torch.no_grad():
            hidden = text_encoder(ids.to(device))[0]
        plain = np.zeros(cfg.batch_size, bool)
        if unlocked:
            plain = rng.random(cfg.batch_size) < cfg.decoder_plain_fraction
        # The ControlNet runs on the controlled samples only; plain ones get zero residuals.
        ctl = torch.from_numpy(np.flatnonzero(~plain)).to(device)
        with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=cfg.controlnet_bf16):
            down = mid = None  # a batch of plain samples only: the UNet alone
            if len(ctl):
                down, mid = controlnet(
                    noisy[ctl], t[ctl], hidden[ctl], controlnet_cond=cond_t[ctl], return_dict=False
                )
            if len(ctl) and len(ctl) < cfg.batch_size:
                down = [_scatter_rows(d, ctl, cfg.batch_size) for d in down]
                mid = _scatter_rows(mid, ctl, cfg.batch_size)
            pred = unet(
                noisy,
                t,
                hidden,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
            ).sample
        loss = _weighted_mse(pred.float(), target, weight)
        total = loss
        record = {}
        if bind:
            use = (~drop) & torch.from_numpy(~plain)
            losses, hits = [], []
            for probs in attention.values():
                layer_loss, accuracy = binding.binding_loss(
                    probs,
                    kind_cells[idx].to(device),
                    kind_positions[idx].to(device),
                    use.to(device),
                )
                losses.append(layer_loss)
                hits.append(accuracy)
            bind_loss = torch.stack(losses).mean()
            total = loss + cfg.binding_weight * bind_loss
            record = {"binding_loss": bind_loss.item()}
            hits = [h for h in hits if not math.isnan(h)]
            if hits:  # nan: no prompt in the batch named two shapes
                record["binding_accuracy"] = float(np.mean(hits))
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        ema.update(controlnet)
        if unlocked:
            ema_unet.update(unet)
        if step % 50 == 0 or step == steps - 1:
            logger.log(stage=f"controlnet_{name}", step=step, loss=loss.item(), **record)
    if bind:
        unet.set_attn_processor(previous_processors)
    if unlocked:
        return ema.shadow, ema_unet.shadow
    return ema.shadow, unet


def train(
    cfg: TrainConfig,
    out: pathlib.Path,
    stages: tuple[str, ...] = ("ae", "unet", "edges", "regions"),
    device: str = "cpu",
) -> dict:
    """Run the requested stages into ``out`` and return per-stage wall times in seconds.

    Stages not requested are loaded from ``out`` (so a ControlNet can be retrained on an existing
    base model). The base pipeline goes to ``out/base``, the ControlNets to ``out/controlnet_*``.
    With ``cfg.decoder_lr > 0`` the ControlNet stage also rewrites ``out/base`` (its UNet decoder):
    to reproduce the shipped weights, run it on the output of the ``ae,unet`` stages, not on a base
    that has been through it already.
    The shipped weights come from ``device="cpu"``; another device runs the same steps with other
    random numbers and kernels, so its weights differ.
    """
    net_steps = {"edges": cfg.edges_steps, "regions": cfg.regions_steps}
    trained_nets = [n for n, steps in net_steps.items() if n in stages and steps > 0]
    if cfg.decoder_lr > 0 and len(trained_nets) > 1:
        raise ValueError(
            "decoder_lr > 0 changes the base UNet, which every ControlNet is trained against: "
            f"train one ControlNet at a time with it (got {', '.join(trained_nets)})"
        )
    from diffusers import AutoencoderTiny, StableDiffusionPipeline

    # Two threads by default (1.5× faster per UNet step than one on an idle 2-core machine). When
    # other processes share the cores, set TOY_TRAIN_THREADS=1: two threads then stall on each
    # other's barriers (measured 4-8× slower steps).
    default_threads = min(2, os.cpu_count() or 1)
    torch.set_num_threads(int(os.environ.get("TOY_TRAIN_THREADS", default_threads)))
    torch.use_deterministic_algorithms(True, warn_only=True)
    out.mkdir(parents=True, exist_ok=True)
    logger = Logger(out / "train_log.jsonl")
    logger.log(stage="config", device=device, **dataclasses.asdict(cfg))
    times: dict[str, float] = {}

    t0 = time.time()
    data = generate_dataset(cfg.seed, cfg.samples, workers=cfg.workers)
    times["data"] = time.time() - t0
    logger.log(stage="data", samples=cfg.samples, seconds=round(times["data"], 1))

    base = out / "base"
    tokenizer = build.build_tokenizer(base / "tokenizer")
    if "ae" in stages:
        t0 = time.time()
        vae = train_autoencoder(cfg, data["image"], logger, device)
        times["autoencoder"] = time.time() - t0
    else:
        vae = AutoencoderTiny.from_pretrained(base / "vae").to(device)
        vae.eval().requires_grad_(False)

    diffusion_stages = {"unet", "edges", "regions"} & set(stages)
    latents = None
    if "ae" in stages or diffusion_stages:
        t0 = time.time()
        latents = encode_latents(vae, data["image"])
        if "ae" in stages:
            # SD convention: latents * scaling_factor have unit variance.
            vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
            vae.save_pretrained(base / "vae", safe_serialization=True)
        latents = latents * vae.config.scaling_factor
        times["encode_latents"] = time.time() - t0
        logger.log(
            stage="latents",
            scaling_factor=vae.config.scaling_factor,
            seconds=round(times["encode_latents"], 1),
        )
    if not diffusion_stages:
        times["total"] = sum(times.values())
        logger.log(stage="done", **{k: round(v, 1) for k, v in times.items()})
        return times

    input_ids = _tokenize(tokenizer, data["caption"]).to(device)
    empty_ids = _tokenize(tokenizer, [""])[0].to(device)
    kind_cells = kind_positions = None
    if trained_nets and cfg.binding_weight > 0:
        # The 8×8 grid of the UNet decoder's cross-attention on 16×16 latents.
        kind_cells = torch.from_numpy(binding.kind_cells(data["regions"], 8))
        kind_positions = binding.kind_word_positions(tokenizer, input_ids.cpu())
    if "unet" in stages:
        t0 = time.time()
        unet, text_encoder = train_unet(cfg, latents, input_ids, empty_ids, len(tokenizer), logger)
        times["unet"] = time.time() - t0
        pipe = build.assemble_pipeline(vae, text_encoder, tokenizer, unet)
        pipe.save_pretrained(base, safe_serialization=True)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(base).to(device)
        unet, text_encoder = pipe.unet, pipe.text_encoder

    nets = {
        "edges": (
            [data["canny"], data["scribble"]],
            [1 - cfg.scribble_fraction, cfg.scribble_fraction],
        ),
        "regions": ([data["regions"]], [1.0]),
    }
    for name in trained_nets:
        steps = net_steps[name]
        controls, weights = nets[name]
        t0 = time.time()
        net, trained_unet = train_controlnet(
            cfg,
            name,
            steps,
            unet,
            text_encoder,
            latents,
            input_ids,
            empty_ids,
            controls,
            weights,
            logger,
            kind_cells,
            kind_positions,
        )
        net.save_pretrained(out / f"controlnet_{name}", safe_serialization=True)
        if trained_unet is not unet:  # decoder unlocked: the base model changed with it
            unet = trained_unet
            pipe = build.assemble_pipeline(pipe.vae, text_encoder, tokenizer, unet)
            pipe.save_pretrained(base, safe_serialization=True)
        times[f"controlnet_{name}"] = time.time() - t0

    times["total"] = sum(times.values())
    logger.log(stage="done", **{k: round(v, 1) for k, v in times.items()})
    return times


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=TOY_WEIGHTS_DIR,
        help="output folder (default: the shipped weights)",
    )
    parser.add_argument("--smoke", action="store_true", help="a few steps on a tiny dataset (CI)")
    parser.add_argument(
        "--stages",
        default="ae,unet,edges,regions",
        help="comma-separated subset of ae,unet,edges,regions",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="torch device, e.g. cuda (the shipped weights were trained on cpu)",
    )
    for field in dataclasses.fields(TrainConfig):
        kind = type(field.default)
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=_parse_bool if kind is bool else kind,
            default=None,
        )
    args = parser.parse_args(argv)
    cfg = TrainConfig(**(SMOKE if args.smoke else {}))
    for field in dataclasses.fields(TrainConfig):
        value = getattr(args, field.name)
        if value is not None:
            setattr(cfg, field.name, value)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    try:
        stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
        times = train(cfg, args.out, stages, device=args.device)
    finally:
        torch.set_num_threads(threads)  # main() also runs in-process from the tests
    print(json.dumps({k: round(v, 1) for k, v in times.items()}))


if __name__ == "__main__":
    main()
