"""The training lab's core (controlnet_core.toy.lab): a ControlNet trained from zero convolutions."""

from __future__ import annotations

import time

import numpy as np
import pytest

from controlnet_core import Engine, FieldError, Settings
from controlnet_core.toy.lab import TrainingLab


@pytest.fixture(scope="module")
def toy_pipe():
    return Engine(Settings(backend="toy")).manager.base()


def test_at_step_zero_the_controlnet_changes_nothing(toy_pipe):
    lab = TrainingLab(toy_pipe, samples=16, batch_size=2)
    assert lab.step == 0 and lab.zero_conv_norms() and all(n == 0.0 for n in lab.zero_conv_norms())
    shown = lab.sample(steps=4)
    assert np.array_equal(shown.controlled, shown.plain)  # zero convolutions add exactly nothing
    assert shown.control.shape == (64, 64, 3) and shown.prompt


def test_training_moves_the_zero_convolutions_and_drops_prompts(toy_pipe):
    lab = TrainingLab(toy_pipe, samples=16, batch_size=4, drop_prompt=0.5, seed=1)
    lab.train(3)
    assert lab.step == 3 and all(np.isfinite(lab.losses))
    assert all(n > 0 for n in lab.zero_conv_norms())
    assert lab.prompts_seen == 12 and 0 < lab.prompts_dropped < 12
    shown = lab.sample(steps=4)
    assert not np.array_equal(shown.controlled, shown.plain)
    assert 0.0 <= shown.edge_f1 <= 1.0
    never = TrainingLab(toy_pipe, samples=16, batch_size=4, drop_prompt=0.0)
    always = TrainingLab(toy_pipe, samples=16, batch_size=4, drop_prompt=1.0)
    never.train(1)
    always.train(1)
    assert never.prompts_dropped == 0 and always.prompts_dropped == 4


def test_bad_lab_settings_name_their_field(toy_pipe):
    with pytest.raises(FieldError, match="kind must be one of"):
        TrainingLab(toy_pipe, kind="depth", samples=4)
    with pytest.raises(FieldError, match="drop_prompt must be between 0 and 1"):
        TrainingLab(toy_pipe, drop_prompt=1.5, samples=4)


def test_the_lab_tab_streams_a_run_and_allows_one_at_a_time():
    import gradio as gr

    from app import build_app
    from demos import lab

    demo = build_app(Engine(Settings(backend="toy")), ["canny"], combine=False)
    run = next(f for f in demo.fns.values() if f.api_name == "lab_train").fn
    frames = run("canny", 50, 1)  # a 1-second budget
    status, pictures, curve, bars = next(frames)
    assert status.startswith("**Step 0**")
    first_controlled, first_plain = (np.asarray(p[0]) for p in pictures[1:])
    assert np.array_equal(first_controlled, first_plain)  # zero convolutions: nothing changes
    assert (bars["norm"] == 0).all()
    started = time.perf_counter()
    with pytest.raises(gr.Error, match="already running"):  # another visitor is told at once
        next(run("canny", 50, 1))
    assert time.perf_counter() - started < 1.0  # no worker held waiting for the run to end
    *_, last = frames  # the budget ends the run, and its last status says so
    status, pictures, curve, bars = last
    assert status.startswith(f"**Done at step {lab._last_run['lab'].step}**")
    assert "trained 1 s" in status and len(curve) >= 1 and (bars["norm"] > 0).all()
    assert not lab.LAB_LOCK.locked()


def test_after_stop_the_page_shows_the_step_the_weights_are_at(monkeypatch):
    """Stop cancels the run; the step after it shows the run's state once it has let go (the
    weights Use and Download take), for the visitor who ran it only."""
    from types import SimpleNamespace

    import gradio as gr

    from app import build_app
    from demos import lab

    demo = build_app(Engine(Settings(backend="toy")), ["canny"], combine=False)
    run = next(f for f in demo.fns.values() if f.api_name == "lab_train").fn
    owner, other = SimpleNamespace(session_hash="a"), SimpleNamespace(session_hash="b")
    frames = run("canny", 50, 30, owner)
    next(frames)
    next(frames)
    frames.close()  # what Stop's cancel does to the generator
    assert lab.stopped_frame(other) == tuple(gr.skip() for _ in range(4))
    status, pictures, curve, bars = lab.stopped_frame(owner)
    step = lab._last_run["lab"].step
    assert step > 0 and status.startswith(f"**Stopped at step {step}**")
    assert pictures[1][1] == f"with the ControlNet, step {step}"
    assert lab.stopped_frame(owner)[0] == status  # pressed again: the same, not drawn again
    # A run that has not let go in time (a busy machine) is still said to be stopping.
    monkeypatch.setattr(lab, "REFRESH_S", 0.1)
    with lab.LAB_LOCK:
        status, *rest = lab.stopped_frame(owner)
    assert status.startswith(f"**Stopped at step {step}**, finishing")
    assert rest == [gr.skip()] * 3
    # A run that spent its budget keeps its "Done": Stop afterwards changes nothing.
    for _ in run("canny", 50, 1, owner):
        pass
    assert lab._last_run["ended"] == "Done"
    assert lab.stopped_frame(owner) == tuple(gr.skip() for _ in range(4))


def test_the_lab_weights_download_as_a_diffusers_folder(tmp_path):
    import zipfile

    from diffusers import ControlNetModel

    from app import build_app

    demo = build_app(Engine(Settings(backend="toy")), ["canny"], combine=False)
    fns = {f.api_name: f.fn for f in demo.fns.values() if f.api_name}
    for _ in fns["lab_train"]("scribble", 50, 1):
        pass
    archive = fns["lab_weights"]()
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(tmp_path)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert folder.name.startswith("toy_controlnet_scribble_step")
    loaded = ControlNetModel.from_pretrained(folder)
    assert float(loaded.controlnet_mid_block.weight.norm()) > 0  # trained, not zero


def test_a_second_user_can_watch_the_running_training():
    import gradio as gr

    from app import build_app
    from demos import lab

    demo = build_app(Engine(Settings(backend="toy")), ["canny"], combine=False)
    fns = {f.api_name: f.fn for f in demo.fns.values() if f.api_name}
    with pytest.raises(gr.Error, match="No training is running"):
        next(fns["lab_watch"]())
    frames = fns["lab_train"]("canny", 50, 30)
    first = next(frames)  # the run holds the server's lab now
    watched = next(fns["lab_watch"]())
    assert watched[0] == first[0]  # the watcher sees the owner's latest frame
    frames.close()  # the owner stops: the run lets the server go
    assert not lab.LAB_LOCK.locked()


def test_lab_weights_replace_the_backends_for_one_request(toy_pipe, square_image):
    engine = Engine(Settings(backend="toy"))
    lab = TrainingLab(engine.manager.base(), samples=8, batch_size=2)
    from controlnet_core import GenerationRequest

    request = GenerationRequest(
        modality="canny", prompt="a red star", steps=4, resolution=64, seed=3
    )
    untrained = engine.generate(request, square_image, controlnets={"canny": lab.weights()})
    plain = engine.generate(replace_scale(request, 0.0), square_image)
    assert np.array_equal(untrained.arrays, plain.arrays)  # zero convolutions: plain SD
    assert untrained.recipe["controlnet_model"] == "training lab: canny, step 0"
    shipped = engine.generate(request, square_image)
    assert shipped.recipe["controlnet_model"] != untrained.recipe["controlnet_model"]


def replace_scale(request, scale):
    from dataclasses import replace

    return replace(request, conditioning_scale=scale)


def test_a_session_uses_the_lab_weights_and_others_do_not(serve_app, tmp_path):
    from gradio_client import handle_file
    from PIL import Image

    from tests.conftest import endpoint_args

    client, demo, _ = serve_app(["canny"], settings=Settings(backend="toy"), combine=False)
    image = np.full((64, 64, 3), 255, np.uint8)
    image[16:48, 16:48] = 0
    Image.fromarray(image).save(tmp_path / "square.png")
    args = endpoint_args(
        client,
        "/canny",
        image=handle_file(str(tmp_path / "square.png")),
        steps=2,
        randomize_seed=False,
    )
    client.predict("canny", 50, 10, api_name="/lab_train")  # the smallest budget
    client.predict(api_name="/lab_use_weights")
    _, mine, _, _ = client.predict(*args, api_name="/canny")
    assert mine["controlnet_model"].startswith("training lab: canny, step ")
    from gradio_client import Client

    other = Client(demo.local_url, verbose=False)
    _, theirs, _, _ = other.predict(*args, api_name="/canny")
    assert not theirs["controlnet_model"].startswith("training lab")
    client.predict(api_name="/lab_shipped_weights")
    _, back, _, _ = client.predict(*args, api_name="/canny")
    assert back["controlnet_model"] == theirs["controlnet_model"]
