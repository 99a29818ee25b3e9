"""The training lab: a fresh ControlNet trained step by step from the toy base model, observable.

`TrainingLab` builds `ControlNetModel.from_unet` on the toy's frozen UNet (a trainable copy of its
encoder joined by zero convolutions), and trains it on the toy's synthetic shapes with their canny
or scribble maps, dropping `drop_prompt` of the prompts as the paper does (50 %). Between calls to
`train(steps)` it reports what a learner watches: the loss per step, the norm of every zero
convolution (exactly 0 before the first step, then growing), and one fixed held-out control map and
prompt rendered with the current weights next to plain SD for the same seed (identical at step 0,
because zero convolutions add nothing), with the edge F1 of the controlled image against its map.

The page around it (time budget, Stop, one run per server, watching, download, use in the tabs) is
`demos/lab.py`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from controlnet_core.errors import FieldError, shown

LAB_KINDS = ("canny", "scribble")
HELD_OUT_SEED = 20261129  # not the training data's seed: the lab's sample is never trained on


@dataclass
class LabSample:
    """The held-out control map rendered now: with the ControlNet, plain SD, and the edge F1."""

    control: np.ndarray  # (64, 64, 3) uint8
    prompt: str
    controlled: np.ndarray  # (64, 64, 3) uint8
    plain: np.ndarray
    edge_f1: float


class TrainingLab:
    """One ControlNet training on the toy base `pipe` (see the module docstring)."""

    def __init__(
        self,
        pipe,
        kind: str = "canny",
        drop_prompt: float = 0.5,
        seed: int = 0,
        samples: int = 256,
        batch_size: int = 8,
        # With 1e-4 and batches of 8 the edges appear after ~600 steps, about a minute on 2 CPU
        # cores (docs/training_lab.md): within the lab's default time budget.
        learning_rate: float = 1e-4,
    ) -> None:
        import torch

        from controlnet_core.toy import build
        from controlnet_core.toy.data import generate_dataset, generate_sample
        from controlnet_core.toy.train import _tokenize, encode_latents

        if kind not in LAB_KINDS:
            raise FieldError(("kind",), f"must be one of {list(LAB_KINDS)}; got {shown(kind)}")
        if isinstance(drop_prompt, bool) or not 0.0 <= float(drop_prompt) <= 1.0:
            raise FieldError(("drop_prompt",), f"must be between 0 and 1; got {shown(drop_prompt)}")
        self.pipe, self.kind, self.drop_prompt = pipe, kind, float(drop_prompt)
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        data = generate_dataset(seed, samples)
        with torch.no_grad():
            self.latents = encode_latents(pipe.vae, data["image"]) * pipe.vae.config.scaling_factor
        self.controls = data[kind]
        self.input_ids = _tokenize(pipe.tokenizer, data["caption"])
        self.empty_ids = _tokenize(pipe.tokenizer, [""])[0]
        pipe.unet.requires_grad_(False)
        pipe.text_encoder.requires_grad_(False)
        self.device = pipe.unet.device  # a GPU when the toy base runs on one
        self.controlnet = build.build_controlnet(pipe.unet).to(self.device).train()
        self.scheduler = build.train_scheduler()
        self.optimizer = torch.optim.AdamW(
            self.controlnet.parameters(), lr=learning_rate, weight_decay=0.01
        )
        self.losses: list[float] = []
        self._lock = threading.Lock()  # a copy of the weights is never taken mid-step
        self.prompts_seen = 0
        self.prompts_dropped = 0
        held_out = generate_sample(HELD_OUT_SEED, 0)
        self.held_out_control = getattr(held_out, kind)[:, :, 0]  # grey, as the training maps
        self.held_out_prompt = held_out.caption

    @property
    def step(self) -> int:
        return len(self.losses)

    def weights(self):
        """A frozen copy of the ControlNet as it is now, for `Engine.generate(controlnets=...)`:
        keyed by its kind (the canny or scribble ControlNet of the toy backend)."""
        import copy

        from controlnet_core.models import LoadedControlNet

        with self._lock:
            model = copy.deepcopy(self.controlnet).eval().requires_grad_(False)
            step = self.step
        return LoadedControlNet(self.kind, f"training lab: {self.kind}, step {step}", model)

    def save(self, folder) -> None:
        """The ControlNet as it is now, as a diffusers folder (`ControlNetModel.from_pretrained`)."""
        self.controlnet.save_pretrained(folder)

    def zero_conv_norms(self) -> list[float]:
        """The norm of each zero convolution's weights: every down-block output, then the middle."""
        convs = [*self.controlnet.controlnet_down_blocks, self.controlnet.controlnet_mid_block]
        return [float(conv.weight.detach().norm()) for conv in convs]

    def train(self, steps: int) -> None:
        """`steps` optimisation steps (a batch each); the losses go to `losses`."""
        import torch

        from controlnet_core.toy.train import _noisy_batch, _weighted_mse

        for _ in range(steps):
            index = self.rng.integers(len(self.latents), size=self.batch_size)
            cond = np.repeat(self.controls[index][..., None], 3, axis=3)
            cond = torch.from_numpy(cond).permute(0, 3, 1, 2).float().to(self.device) / 255.0
            ids = self.input_ids[torch.from_numpy(index)].clone()
            drop = torch.from_numpy(self.rng.random(self.batch_size) < self.drop_prompt)
            ids[drop] = self.empty_ids
            self.prompts_seen += self.batch_size
            self.prompts_dropped += int(drop.sum())
            noisy, target, t, weight = _noisy_batch(
                self.scheduler, self.latents[torch.from_numpy(index).to(self.latents.device)], 5.0
            )
            with torch.no_grad():
                hidden = self.pipe.text_encoder(ids.to(self.device))[0]
            down, mid = self.controlnet(noisy, t, hidden, controlnet_cond=cond, return_dict=False)
            pred = self.pipe.unet(
                noisy,
                t,
                hidden,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
            ).sample
            loss = _weighted_mse(pred.float(), target, weight)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.controlnet.parameters(), 1.0)
            with self._lock:  # `weights()` copies whole steps only
                self.optimizer.step()
                self.losses.append(float(loss.detach()))

    def sample(self, steps: int = 20, guidance_scale: float = 3.0, seed: int = 0) -> LabSample:
        """The held-out map and prompt rendered with the current weights and without, one batch."""
        return self.render(self.held_out_control, self.held_out_prompt, steps, guidance_scale, seed)

    def held_out_f1(self, count: int = 8, steps: int = 10) -> float:
        """Mean edge F1 of `count` held-out maps (never trained on) rendered with the current weights."""
        from controlnet_core.toy.data import generate_sample

        scores = []
        for index in range(count):
            held_out = generate_sample(HELD_OUT_SEED, index)
            control = getattr(held_out, self.kind)[:, :, 0]
            scores.append(self.render(control, held_out.caption, steps, seed=index).edge_f1)
        return float(np.mean(scores))

    def render(
        self,
        control_map: np.ndarray,
        prompt: str,
        steps: int = 20,
        guidance_scale: float = 3.0,
        seed: int = 0,
    ) -> LabSample:
        """`control_map` (grey) and `prompt` rendered with the current weights and without."""
        import cv2
        import torch
        from PIL import Image

        from controlnet_core.models import make_scheduler
        from controlnet_core.sampling import ControlUnit, UnitSettings, Variant, sample
        from controlnet_core.toy.evaluate import edge_f1

        control = np.repeat(control_map[..., None], 3, axis=2)
        self.controlnet.eval()
        try:
            with torch.no_grad():
                images, _ = sample(
                    self.pipe,
                    [ControlUnit(self.controlnet, Image.fromarray(control))],
                    [Variant(seed, (UnitSettings(1.0),)), Variant(seed, (UnitSettings(0.0),))],
                    prompt=prompt,
                    steps=steps,
                    guidance_scale=guidance_scale,
                    width=control.shape[1],
                    height=control.shape[0],
                    scheduler_factory=lambda: make_scheduler("UniPC", self.pipe.scheduler.config),
                )
        finally:
            self.controlnet.train()
        controlled, plain = (images * 255).round().astype(np.uint8)
        edges = cv2.Canny(cv2.cvtColor(controlled, cv2.COLOR_RGB2GRAY), 50, 150) > 0
        score = edge_f1(edges, control_map > 0)
        return LabSample(control, prompt, controlled, plain, score)
