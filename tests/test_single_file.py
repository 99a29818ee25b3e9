"""The real loading path for a single-file base model (.safetensors/.ckpt), offline, on a tiny model.

The tiny pipeline is written in the original LDM/CompVis layout (tests/ldm_checkpoint.py), as
community SD1.5 checkpoints are, and loaded back through `StableDiffusionPipeline.from_single_file`
with a local `--base-model-config` folder. That folder holds configs only (what diffusers itself
fetches for a single file), so every weight the loaded pipeline has must have come from the file.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from controlnet_core import Engine, GenerationRequest
from controlnet_core.models import ModelManager
from controlnet_core.preprocessors import WeightsUnavailableError
from controlnet_core.settings import Settings
from controlnet_core.tiny import tiny_controlnet, tiny_pipeline
from tests.conftest import FAST
from tests.ldm_checkpoint import ldm_state_dict, save_ldm_checkpoint, unet_to_ldm, vae_to_ldm

WEIGHT_SUFFIXES = (".safetensors", ".bin")


@pytest.fixture(scope="module")
def single_file_models(tmp_path_factory):
    """The tiny pipeline as LDM-layout single files, a configs-only folder, the canny ControlNet."""
    root = tmp_path_factory.mktemp("single-file")
    pipe = tiny_pipeline()
    save_ldm_checkpoint(pipe, root / "tiny-sd15.safetensors")
    save_ldm_checkpoint(pipe, root / "tiny-sd15.ckpt")
    pipe.save_pretrained(root / "config")
    for weights in (root / "config").rglob("*"):
        if weights.suffix in WEIGHT_SUFFIXES:
            weights.unlink()
    tiny_controlnet(pipe.unet, "canny").save_pretrained(
        root / "controlnets" / "control_v11p_sd15_canny"
    )
    return root


def real_settings(root, base_model, with_config: bool = True) -> Settings:
    return Settings(
        backend="real",
        base_model=str(base_model),
        base_model_config=str(root / "config") if with_config else None,
        controlnet_dir=str(root / "controlnets"),
        device="cpu",
        dtype="float32",  # compared with the tiny backend, which runs float32
    )


def test_ldm_checkpoint_has_the_original_layout():
    checkpoint = ldm_state_dict(tiny_pipeline())
    prefixes = {key.split(".")[0] for key in checkpoint}
    assert prefixes == {"model", "first_stage_model", "cond_stage_model"}
    # The tiny UNet: 2 blocks of 2 layers, the attention blocks second going down, first going up.
    assert checkpoint["model.diffusion_model.input_blocks.3.0.op.weight"].shape == (32, 32, 3, 3)
    assert "model.diffusion_model.input_blocks.5.1.proj_in.weight" in checkpoint
    assert "model.diffusion_model.output_blocks.2.2.conv.weight" in checkpoint  # after attention
    assert "model.diffusion_model.output_blocks.5.0.skip_connection.weight" in checkpoint
    assert "first_stage_model.decoder.up.3.block.0.conv1.weight" in checkpoint
    # LDM's VAE attention is made of 1x1 convolutions.
    assert checkpoint["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (32, 32, 1, 1)
    assert checkpoint["first_stage_model.decoder.mid.attn_1.proj_out.weight"].dim() == 4
    clip_key = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"
    assert clip_key in checkpoint


def test_ldm_layout_of_full_size_sd15_modules():
    """The index arithmetic reproduces SD1.5's own key names (modules on the meta device: no memory)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel

    with init_empty_weights():
        unet = UNet2DConditionModel(cross_attention_dim=768)  # the defaults are SD1.5's UNet
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
        )
    unet_keys = set(unet_to_ldm(unet.state_dict(), layers_per_block=2))
    for key in (
        "input_blocks.3.0.op.weight",
        "input_blocks.9.0.op.weight",
        "input_blocks.11.0.in_layers.2.weight",
        "input_blocks.8.1.transformer_blocks.0.attn2.to_k.weight",
        "middle_block.2.out_layers.3.weight",
        "output_blocks.2.1.conv.weight",  # up block without attention: upsampler in slot 1
        "output_blocks.5.2.conv.weight",
        "output_blocks.11.0.skip_connection.weight",  # the key diffusers tells SD1.x by
    ):
        assert key in unet_keys, key
    vae_keys = set(vae_to_ldm(vae.state_dict()))
    for key in (
        "decoder.up.0.block.2.conv2.weight",
        "decoder.up.3.upsample.conv.weight",
        "encoder.down.1.block.0.nin_shortcut.weight",
        "encoder.norm_out.weight",
    ):
        assert key in vae_keys, key


@pytest.mark.parametrize("filename", ["tiny-sd15.safetensors", "tiny-sd15.ckpt"])
def test_real_loading_path_from_a_single_file_matches_the_tiny_backend(
    single_file_models, square_image, filename
):
    checkpoint = single_file_models / filename
    engine = Engine(real_settings(single_file_models, checkpoint))
    request = GenerationRequest(modality="canny", seed=9, **FAST)
    loaded = engine.generate(request, square_image)
    assert loaded.recipe["backend"] == "real"
    assert loaded.recipe["base_model"] == checkpoint.name

    # Every weight came back exactly from the single file.
    reference_pipe = tiny_pipeline()
    base = engine.manager.base()
    for name in ("unet", "vae", "text_encoder"):
        expected = getattr(reference_pipe, name).state_dict()
        actual = getattr(base, name).state_dict()
        assert actual.keys() == expected.keys(), name
        for key, value in expected.items():
            assert torch.equal(actual[key], value), f"{name}.{key}"

    reference = Engine(Settings(backend="tiny")).generate(request, square_image)
    np.testing.assert_allclose(loaded.arrays, reference.arrays, atol=1e-4)


def write_bad_files(root):
    """Files with a checkpoint suffix that cannot be loaded, and the reason the message gives."""
    from safetensors.torch import save_file

    garbage = root / "garbage.safetensors"
    garbage.write_bytes(b"this is not a checkpoint" * 8)
    truncated = root / "truncated.safetensors"
    truncated.write_bytes((root / "tiny-sd15.safetensors").read_bytes()[:50_000])
    foreign = root / "foreign.safetensors"
    save_file({"some.other.model.weight": torch.zeros(4, 4)}, str(foreign))
    return {
        garbage: "Unable to load weights",
        truncated: "Unable to load weights",
        foreign: "appear to be missing in the checkpoint",
    }


def test_a_corrupt_or_foreign_single_file_says_what_failed_and_how_to_fix_it(single_file_models):
    for path, reason in write_bad_files(single_file_models).items():
        manager = ModelManager(real_settings(single_file_models, path))
        with pytest.raises(WeightsUnavailableError) as caught:
            manager.base()
        message = str(caught.value)
        assert f"The base model weights '{path.name}' could not be loaded (" in message, message
        assert str(path.parent) not in message  # no server paths
        assert reason in message, message
        assert "--base-model-config" in message and "single .safetensors/.ckpt" in message
        assert "--backend toy" in message


def test_a_single_file_offline_without_its_config_folder_points_at_base_model_config(
    single_file_models,
):
    path = single_file_models / "tiny-sd15.safetensors"
    manager = ModelManager(real_settings(single_file_models, path, with_config=False))
    with pytest.raises(WeightsUnavailableError) as caught:
        manager.base()
    message = str(caught.value)
    assert f"'{path.name}' could not be loaded" in message
    assert "add --base-model-config with a diffusers folder" in message
