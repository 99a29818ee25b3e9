"""Launch a single tab on its own (`python -m demos.canny`), with the same settings as app.py."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from controlnet_core.engine import Engine
from controlnet_core.settings import settings_from_cli


def launch_single(create_demo: Callable[[Engine], gr.Blocks]) -> None:
    settings = settings_from_cli()
    demo = create_demo(Engine(settings))
    demo.queue(max_size=settings.queue_size).launch(
        server_name=settings.host,
        server_port=settings.port,
        share=settings.share,
        show_error=True,  # as in app.py: gradio's own input errors name the input
    )
