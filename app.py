"""ControlNet demo suite: every modality of the registry as a tab of one Gradio app.

    python app.py                          # real SD1.5 weights if they can be had, else the toy model
    python app.py --backend tiny --port N  # offline tiny backend on 127.0.0.1:N (tests, scripts)
    python app.py --help                   # every setting (each also has an environment variable)

Nothing loads weights at import or start-up: the first generation does, behind a progress bar.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable, Sequence

import gradio as gr

from controlnet_core import MODALITIES, Engine, Settings
from demos.builder import create_demo as build_tab
from demos.builder import tab_container
from demos.launch import serve, start_engine

TITLE = "ControlNet demo suite"


COMBINE_POSITION = 3  # after Canny, Scribble and Sketch


def combine_tab(engine: Engine) -> None:
    from demos import combine

    with gr.Tab("Combine", id="combine"):
        combine.create_demo(engine)


def lab_tab(engine: Engine) -> None:
    from demos import lab

    with gr.Tab("Training lab", id="lab"):
        lab.create_demo(engine)


def tab_factory(modality_id: str) -> Callable[[Engine], gr.Blocks]:
    """`demos.<modality_id>.create_demo` when the modality has its own module, else the generic tab."""
    module_name = f"demos.{modality_id}"
    if importlib.util.find_spec(module_name) is not None:
        return importlib.import_module(module_name).create_demo
    return lambda engine: build_tab(modality_id, engine)


EXPLAINER = """
**ControlNet in four sentences.** ControlNet makes a *trainable copy* of Stable Diffusion's encoder
and middle block and feeds it the control image (edges, depth, pose…), while the original UNet stays
*locked*. The copy's outputs are added back into the locked UNet through *zero convolutions*: 1×1
convolutions that start at zero, so an untrained ControlNet changes nothing. That is why **strength 0
is exactly plain Stable Diffusion**: press **Compare with plain SD** in any tab to see both images for
the same seed, made in one batched pass, and drag the slider between them. During training about half
of the prompts were dropped, so the ControlNet learned to recognise content from the control image
alone: that is what **guess mode** (an empty prompt is fine) relies on.

**Sliders.** *Strength* scales what the ControlNet adds; *start/end* choose the fraction of the
denoising steps where it acts (ending early fixes the layout, then lets the prompt finish the details);
**Sweep** renders one seed at several values side by side. *Control mode* follows the A1111 extension:
"My prompt is more important" weakens the shallow blocks (0.825^(12−i)), "ControlNet is more
important" also applies control to the conditional half of CFG only, so guidance amplifies it.
"""


def build_app(
    engine: Engine,
    modality_ids: Sequence[str] | None = None,
    combine: bool = True,
    lab: bool = True,
) -> gr.Blocks:
    """The whole app: a header, one tab per modality (all of the registry by default), Combine.
    A `gr.Blocks` of its own, or a column of the page being built (as `serve` builds it)."""
    modality_ids = list(modality_ids or MODALITIES)
    with tab_container(title=TITLE) as demo:
        gr.Markdown(
            f"# {TITLE}\n"
            "ControlNet steers Stable Diffusion with a control image: edges, a drawing, depth, pose… "
            "Pick a tab, give it an image (or pick one of its examples; draw one in Sketch), "
            "and compare with plain SD."
        )
        with gr.Accordion("What am I looking at?", open=False):
            gr.Markdown(EXPLAINER)
        # Combine goes right after the first few tabs: at the end, a dozen tabs push it into
        # the overflow menu ("⋯") on a laptop screen, where nobody finds it.
        position = min(COMBINE_POSITION, len(modality_ids)) if combine else -1
        # On a phone the tab names wrap onto a few rows instead of hiding in an overflow menu.
        with gr.Tabs(overflow_behavior="wrap"):
            for index, modality_id in enumerate(modality_ids):
                if index == position:
                    combine_tab(engine)
                modality = MODALITIES[modality_id]
                with gr.Tab(modality.label, id=modality.id):
                    tab_factory(modality_id)(engine)
            if position == len(modality_ids):
                combine_tab(engine)
            if lab:
                lab_tab(engine)
    return demo


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> None:
    """Serve the app. Settings come from `argv` and the environment unless given; a bad one (out of
    range, a busy port, a missing MCP extra) stops the app with a one-line error naming its flag
    or variable, before gradio starts."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    engine = start_engine(argv, settings)
    settings = engine.settings
    serve(lambda: build_app(engine), settings, title=TITLE, warm_up=engine.warm_up)


if __name__ == "__main__":
    main()
