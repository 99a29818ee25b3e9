"""Base-model families (controlnet_core.families): SDXL or SD2 bases and ControlNets of another
family than the base are refused up front, with both models named, instead of failing deep inside."""

from __future__ import annotations

import pytest
import torch
from diffusers import ControlNetModel
from safetensors.torch import save_file

from bench.components import SD15_UNET_CONFIG
from controlnet_core import Engine, GenerationRequest, ModelFamilyError, Settings
from controlnet_core.families import SD2, SD15, SDXL, UNKNOWN, base_family, family_of_config
from controlnet_core.tiny import tiny_sdxl_pipeline
from tests.conftest import FAST, free_port


def test_the_family_comes_from_the_config_not_the_name():
    assert family_of_config(SD15_UNET_CONFIG) == SD15
    assert family_of_config({**SD15_UNET_CONFIG, "cross_attention_dim": 1024}) == SD2
    assert family_of_config(tiny_sdxl_pipeline().unet.config) == SDXL
    assert family_of_config({"cross_attention_dim": 32}) == UNKNOWN  # the tiny SD1.5 models


def test_single_files_are_told_apart_by_their_keys(tmp_path):
    layouts = {
        "sdxl.safetensors": ("conditioner.embedders.1.model.ln_final.weight", SDXL),
        "sd2.safetensors": ("cond_stage_model.model.ln_final.weight", SD2),
        "sd15.safetensors": ("model.diffusion_model.out.2.weight", SD15),
    }
    for name, (key, family) in layouts.items():
        weights = {key: torch.zeros(1), "first_stage_model.decoder.conv_in.weight": torch.zeros(1)}
        save_file(weights, tmp_path / name)
        assert base_family(str(tmp_path / name)) == family, name
    assert base_family("nobody/not-in-the-cache") is None  # the loader finds out
    assert base_family(str(tmp_path / "missing.safetensors")) is None


def test_an_sd2_base_is_refused_at_start_and_at_load(tmp_path, square_image, monkeypatch):
    from demos.launch import start_engine

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    checkpoint = tmp_path / "v2-1_768-ema-pruned.safetensors"
    save_file({"cond_stage_model.model.ln_final.weight": torch.zeros(1)}, checkpoint)
    argv = ["--backend", "real", "--base-model", str(checkpoint), "--port", str(free_port())]
    with pytest.raises(SystemExit) as stopped:
        start_engine(argv)
    message = str(stopped.value)
    assert message.startswith("app.py: error: The base model") and "Stable Diffusion 2.x" in message
    assert "--base-model" in message and "Traceback" not in message

    engine = Engine(Settings(backend="real", base_model=str(checkpoint)))
    with pytest.raises(ModelFamilyError, match="is Stable Diffusion 2.x; this app runs"):
        engine.generate(GenerationRequest(modality="canny", **FAST), square_image)


def test_an_sdxl_controlnet_with_an_sd15_base_names_both(saved_models, tmp_path, square_image):
    """The frequent mistake the other way round: an SDXL ControlNet in --controlnet-dir under an
    SD1.5 base. Refused when it loads, before any denoising."""
    controlnet = ControlNetModel.from_unet(tiny_sdxl_pipeline().unet)
    controlnet.save_pretrained(tmp_path / "control_v11p_sd15_canny")
    engine = Engine(
        Settings(
            backend="real",
            base_model=str(saved_models / "sd15"),
            controlnet_dir=str(tmp_path),
            device="cpu",
        )
    )
    with pytest.raises(ModelFamilyError) as caught:
        engine.generate(GenerationRequest(modality="canny", **FAST), square_image)
    message = str(caught.value)
    assert "control_v11p_sd15_canny" in message and "is for SDXL" in message
    assert "'sd15' is Stable Diffusion 1.x" in message
    assert str(saved_models) not in message and str(tmp_path) not in message  # no server paths
