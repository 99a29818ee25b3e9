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

from controlnet_core.engine import Engine
from controlnet_core.modalities import MODALITIES
from controlnet_core.settings import Settings, settings_from_cli
from demos.builder import create_demo as build_tab

TITLE = "ControlNet demo suite"

CSS = """
.backend-note { font-size: 0.9em; opacity: 0.85; }
footer { display: none !important; }
"""


def tab_factory(modality_id: str) -> Callable[[Engine], gr.Blocks]:
    """`demos.<modality_id>.create_demo` when the modality has its own module, else the generic tab."""
    module_name = f"demos.{modality_id}"
    if importlib.util.find_spec(module_name) is not None:
        return importlib.import_module(module_name).create_demo
    return lambda engine: build_tab(modality_id, engine)


def build_app(engine: Engine, modality_ids: Sequence[str] | None = None) -> gr.Blocks:
    """The whole app: a header and one tab per modality (all of the registry by default)."""
    modality_ids = list(modality_ids or MODALITIES)
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(
            f"# {TITLE}\n"
            "ControlNet steers Stable Diffusion with a control image: edges, a drawing, depth, pose… "
            "Pick a tab, give it an image (or draw), and compare strengths."
        )
        with gr.Tabs():
            for modality_id in modality_ids:
                modality = MODALITIES[modality_id]
                with gr.Tab(modality.label, id=modality.id):
                    tab_factory(modality_id)(engine)
    return demo


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = settings or settings_from_cli(argv)
    engine = Engine(settings)
    demo = build_app(engine)
    demo.queue(max_size=settings.queue_size).launch(
        server_name=settings.host,
        server_port=settings.port,
        share=settings.share,
        css=CSS,
        theme=gr.themes.Soft(),
    )


if __name__ == "__main__":
    main()
