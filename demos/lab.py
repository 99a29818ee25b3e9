"""Training lab tab: train a fresh ControlNet live from the toy base and watch it learn.

A run (`/lab_train`) builds `ControlNetModel.from_unet` on the toy's frozen UNet, with zero
convolutions, and trains it on the toy's shapes for a time budget, dropping a share of the prompts
as the paper does. Every few seconds the page shows the loss curve, the norm of every zero
convolution (0 at the start), and a held-out map rendered with the current weights next to plain SD
for the same seed (identical at step 0), with the edge F1. One run at a time per server; Stop ends
it; another user can follow it (`/lab_watch`); `/lab_weights` downloads the latest run's ControlNet
as a zipped diffusers folder, and `/lab_use_weights` makes the session's own Canny (or Scribble and
Sketch) tabs use it (`demos.session`; toy backend only, the lab trains on the toy base).
"""

from __future__ import annotations

import os
import sys

if not __package__:  # run as `python demos/<tab>.py`: the repo root holds the packages
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import shutil
import threading
import time
from dataclasses import replace
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from controlnet_core import Engine, TrainingLab
from demos.builder import endpoint, tab_container
from demos.hosting import event_wanted, guard_inputs, light_work, output_folder, user_errors
from demos.inside import picture_strip
from demos.session import forget_for_session, use_for_session

LAB_LOCK = threading.Lock()  # one training per server: it takes the CPU (or GPU) for minutes
_last_run: dict[str, Any] = {}  # the server's latest lab, for its weights' download
REFRESH_S = 5.0
STEPS_PER_CHUNK = 5
SAMPLE_STEPS = 10
MAX_BUDGET_S = 300
_toy_base: dict[str, Any] = {}


def toy_base(engine: Engine):
    """The toy base pipeline: the engine's own on the toy backend, else loaded once for the lab."""
    if engine.backend == "toy":
        return engine.manager.base()
    if "pipe" not in _toy_base:
        _toy_base["pipe"] = Engine(replace(engine.settings, backend="toy")).manager.base()
    return _toy_base["pipe"]


def frame(lab, started: float, budget: float, ended: str | None = None) -> tuple:
    """What the page shows now: status, held-out sample, loss curve, zero-convolution norms.
    `ended` ("Done", "Stopped") words the status of a run that has ended."""
    shown = lab.sample(steps=SAMPLE_STEPS)
    big = [Image.fromarray(a).resize((192, 192), Image.NEAREST) for a in (shown.control,)]
    big += [
        Image.fromarray(a).resize((192, 192), Image.BICUBIC)
        for a in (shown.controlled, shown.plain)
    ]
    pictures = [
        (big[0], f"held-out map: “{shown.prompt}”"),
        (big[1], f"with the ControlNet, step {lab.step}"),
        (big[2], "plain SD, same seed"),
    ]
    losses = np.asarray(lab.losses or [np.nan])
    every = max(1, len(losses) // 300)  # at most ~300 points on the curve
    curve = pd.DataFrame({"step": np.arange(len(losses))[::every], "loss": losses[::every]})
    norms = lab.zero_conv_norms()
    bars = pd.DataFrame(
        {
            "convolution": [f"{i:02d}" if i < len(norms) - 1 else "mid" for i in range(len(norms))],
            "norm": norms,
        }
    )
    dropped = 100 * lab.prompts_dropped / lab.prompts_seen if lab.prompts_seen else 0.0
    elapsed = min(time.monotonic() - started, budget)
    clock = f"{elapsed:.0f} of {budget:.0f} s"
    if ended is not None:
        clock = f"trained {elapsed:.0f} s: the weights below are this step's"
    status = (
        f"**{f'{ended} at step' if ended else 'Step'} {lab.step}** · {clock} · edge F1 of the "
        f"ControlNet image against its map: **{shown.edge_f1:.2f}** · prompts dropped so far: "
        f"{dropped:.0f} %"
    )
    return status, pictures, curve, bars


def lab_runner(engine: Engine):
    """The `/lab_train` handler: a generator that trains and yields a frame every REFRESH_S."""

    def run_lab(
        kind: str, drop_prompt_percent: float, time_budget_s: float, request: gr.Request = None
    ):
        budget_s = float(min(max(float(time_budget_s), 1.0), MAX_BUDGET_S))
        session = _session(request)
        # Another visitor is told at once. A visitor whose own stopped run is still finishing its
        # chunk waits for it (the lab's concurrency group lets one such call in at a time).
        own = session is not None and _last_run.get("session") == session
        if not (LAB_LOCK.acquire(timeout=REFRESH_S + 2) if own else LAB_LOCK.acquire(False)):
            raise gr.Error(
                "A training is already running on this server (one at a time): press "
                "“Watch the current run” to follow it, or try again when it ends.",
                print_exception=False,  # a user's message, not a server fault
            )
        try:
            lab = TrainingLab(toy_base(engine), kind, float(drop_prompt_percent) / 100)
            started = time.monotonic()
            _last_run.clear()
            _last_run.update(lab=lab, started=started, budget=budget_s, session=session)
            yield shared_frame(lab, started, budget_s)
            while event_wanted():  # at least one chunk, then until the budget is spent
                chunk_end = min(time.monotonic() + REFRESH_S, started + budget_s)
                lab.train(STEPS_PER_CHUNK)
                while time.monotonic() < chunk_end:
                    lab.train(STEPS_PER_CHUNK)
                if time.monotonic() - started >= budget_s:
                    _last_run["ended"] = "Done"
                    yield shared_frame(lab, started, budget_s, "Done")
                    break
                yield shared_frame(lab, started, budget_s)
        finally:
            _last_run.setdefault("ended", "Stopped")  # Stop, or the visitor left
            LAB_LOCK.release()

    return run_lab


def shared_frame(lab, started: float, budget: float, ended: str | None = None) -> tuple:
    """A frame for the page, kept for the users who watch the run."""
    shown = frame(lab, started, budget, ended)
    _last_run["frame"] = shown
    return shown


def _session(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


def stopped_frame(request: gr.Request = None):
    """After Stop, the stopped run's last state, once it has let go (within a chunk): the page
    otherwise kept the frame before, steps behind the weights Use and Download take. Only for
    the visitor whose run it is, and only for a run that was stopped (not one that ran out its
    budget, nor another visitor's that started meanwhile)."""
    skip = tuple(gr.skip() for _ in range(4))
    session = _session(request)
    if session is None or _last_run.get("session") != session:
        return skip  # no run of this visitor's: nothing of theirs stopped
    if not LAB_LOCK.acquire(timeout=REFRESH_S * 3):  # a busy machine: still in its last chunk
        run = dict(_last_run)
        if run.get("session") != session or "lab" not in run:
            return skip
        return (f"**Stopped at step {run['lab'].step}**, finishing its last few steps.", *skip[1:])
    try:
        run = dict(_last_run)
        if run.get("session") != session or run.get("ended") != "Stopped":
            return skip
        if "stopped" not in run:  # drawn once: Stop pressed again shows the same
            ended = shared_frame(run["lab"], run["started"], run["budget"], "Stopped")
            _last_run["stopped"] = ended
        return _last_run["stopped"]
    finally:
        LAB_LOCK.release()


def watch_run():
    """Follow the server's running training: its latest frame, every REFRESH_S, until it ends."""
    if not LAB_LOCK.locked() or "frame" not in _last_run:
        raise gr.Error("No training is running on this server: start one.", print_exception=False)
    yield _last_run["frame"]
    while LAB_LOCK.locked() and event_wanted():
        time.sleep(REFRESH_S)
        yield _last_run["frame"]


USING_TABS = {"canny": "Canny", "scribble": "Scribble and Sketch"}


@user_errors
def use_weights():
    """This browser session's Canny (or Scribble and Sketch) tabs use the lab's weights."""
    lab = _last_run.get("lab")
    if lab is None or lab.step == 0:
        raise gr.Error("Nothing trained yet: start a training first.")
    weights = lab.weights()
    use_for_session(weights)
    gr.Info(
        f"Your {USING_TABS[lab.kind]} tabs now use the lab's ControlNet ({weights.model_id}); "
        "other users keep the shipped one. Their recipes name it."
    )


@user_errors
def shipped_weights():
    forget_for_session()
    gr.Info("Your tabs use the shipped ControlNets again.")


@user_errors
def download_weights():
    lab = _last_run.get("lab")
    if lab is None or lab.step == 0:
        raise gr.Error("Nothing trained yet: start a training first.")
    # Held while saving, so no run starts mid-save; a stopped run lets go within seconds.
    if not LAB_LOCK.acquire(timeout=10):
        raise gr.Error("A training is running: wait for it to end, or press Stop.")
    try:
        folder = output_folder()
        name = f"toy_controlnet_{lab.kind}_step{lab.step}"
        lab.save(folder / name)
        return shutil.make_archive(str(folder / name), "zip", folder, name)
    finally:
        LAB_LOCK.release()


def create_demo(engine: Engine) -> gr.Blocks:
    with tab_container() as demo:
        gr.Markdown(
            "**Training lab** — train a fresh ControlNet on the toy model's shapes and watch it "
            "learn. It starts as a copy of the UNet's encoder joined by *zero convolutions*, so at "
            "step 0 it changes nothing (the two images below are identical); the zero "
            "convolutions then grow and the edges of the held-out map appear. The paper drops "
            "half of the prompts so the net must learn from the map alone."
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                kind_choice = gr.Radio(
                    label="Control",
                    choices=[("Canny edges", "canny"), ("Scribbles", "scribble")],
                    value="canny",
                )
                drop_slider = gr.Slider(
                    label="Drop the prompt (%)", minimum=0, maximum=100, step=5, value=50
                )
                budget_slider = gr.Slider(
                    label="Time budget (seconds)",
                    minimum=10,
                    maximum=MAX_BUDGET_S,
                    step=10,
                    value=180,
                )
                with gr.Row():
                    start = gr.Button("Start training", variant="primary")
                    stop = gr.Button("Stop", variant="stop", elem_classes=["cn-stop"])
                status = gr.Markdown()
                watch = gr.Button("Watch the current run (someone else's)")
                with gr.Row():
                    use = gr.Button(
                        "Use these weights in my Canny/Scribble tabs",
                        interactive=engine.backend == "toy",
                    )
                    shipped = gr.Button("Back to the shipped weights")
                if engine.backend != "toy":
                    gr.Markdown(
                        "*The lab trains on the toy base model: its weights work in the tabs "
                        "when the app runs the toy backend.*",
                        elem_classes=["backend-note"],
                    )
                download = gr.Button("Download the trained weights (zip)")
                weights = gr.File(label="Trained ControlNet (diffusers folder, zipped)")
            with gr.Column(scale=1, elem_classes=["cn-results-col"]):
                sample = picture_strip("Held-out map, with the ControlNet, plain SD", 3)
                loss = gr.LinePlot(x="step", y="loss", title="Loss", height=220)
                norms = gr.BarPlot(
                    x="convolution",
                    y="norm",
                    title="Zero convolutions: weight norm (down blocks, then the middle)",
                    sort=None,
                    y_lim=[0, None],  # from zero: the bars' lengths compare the norms
                    height=220,
                )

        wire_lab(
            engine, start, stop, watch, download, weights, [status, sample, loss, norms],
            [kind_choice, drop_slider, budget_slider],
        )  # fmt: skip
        wire_weight_choice(engine, use, shipped)
    guard_inputs(demo)
    return demo


def wire_lab(
    engine: Engine,
    start: gr.Button,
    stop: gr.Button,
    watch: gr.Button,
    download: gr.Button,
    weights: gr.File,
    outputs: list,
    settings: list,
) -> None:
    """Start/Stop a run (`/lab_train`), watch another's (`/lab_watch`), download (`/lab_weights`)."""
    status, sample, loss, norms = outputs
    kind_choice, drop_slider, budget_slider = settings
    run_lab = lab_runner(engine)
    run = start.click(
        run_lab,
        inputs=[kind_choice, drop_slider, budget_slider],
        outputs=[status, sample, loss, norms],
        # One run at a time is LAB_LOCK's business: a second visitor's start reaches it and
        # is told at once, where a queue of one would leave them waiting, unseen, for minutes.
        # Two, not more: only a visitor restarting after their own Stop waits in there.
        concurrency_id="lab",
        concurrency_limit=2,
        show_progress_on=[status],
        **endpoint(
            run_lab,
            "lab_train",
            "Train a fresh ControlNet on the toy model's shapes for `time_budget_s` seconds and "
            "stream what it learns: status, held-out sample, loss curve, zero-conv norms.",
        ),
    )
    stop.click(None, cancels=[run]).then(
        stopped_frame,
        outputs=[status, sample, loss, norms],
        api_visibility="private",
        show_progress="hidden",
    )
    watching = watch.click(
        watch_run,
        outputs=[status, sample, loss, norms],
        concurrency_id="lab_watch",
        concurrency_limit=None,
        show_progress="hidden",
        **endpoint(
            watch_run,
            "lab_watch",
            "Follow the training running on this server (another user's): its latest "
            "status, sample, loss curve and zero-conv norms, until it ends.",
        ),
    )
    start.click(None, cancels=[watching])

    download.click(
        download_weights,
        outputs=weights,
        **endpoint(
            download_weights,
            "lab_weights",
            "The latest training lab run's ControlNet as a zipped diffusers folder "
            "(ControlNetModel.from_pretrained), for the toy base model.",
        ),
        **light_work(engine.settings),
    )


def wire_weight_choice(engine: Engine, use: gr.Button, shipped: gr.Button) -> None:
    """`/lab_use_weights` (toy backend only: the lab trains on the toy base) and its undo."""
    if engine.backend == "toy":
        use.click(
            use_weights,
            **endpoint(
                use_weights,
                "lab_use_weights",
                "From now on, this session's Canny (or Scribble and Sketch) generations use "
                "the latest lab run's ControlNet instead of the shipped one.",
            ),
        )
    shipped.click(
        shipped_weights,
        **endpoint(
            shipped_weights,
            "lab_shipped_weights",
            "This session's generations use the shipped ControlNets again.",
        ),
    )


if __name__ == "__main__":
    from demos.launch import launch_single

    launch_single(create_demo)
