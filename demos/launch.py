"""Start-up shared by app.py and the single tabs (`python -m demos.canny`): the settings, checked
before anything heavy starts, and the options every launch passes to gradio."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr

from controlnet_core.engine import Engine
from controlnet_core.settings import Settings, check_can_start, settings_from_cli


def start_engine(
    argv: Sequence[str] | None = None, settings: Settings | None = None, prog: str = "app.py"
) -> Engine:
    """The engine for the settings given, or else those of the command line and environment,
    checked before gradio starts (ranges, a free port, the MCP extra): a bad setting exits with a
    one-line message naming its flag or variable, without a traceback."""
    try:
        engine = Engine(settings or settings_from_cli(argv))
        # After the engine's own checks (a dtype this machine cannot run), which name a setting
        # even when the port is busy.
        check_can_start(engine.settings)
        return engine
    except ValueError as error:
        raise SystemExit(f"{prog}: error: {error}") from None


def launch_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of gradio's `launch` that come from the settings."""
    return {
        "server_name": settings.host,
        "server_port": settings.port,
        "share": settings.share,
        "max_file_size": settings.max_upload_bytes,
        "mcp_server": settings.mcp,
        # Our handlers turn every error into a specific gr.Error; this makes gradio's own input
        # checks (an unreadable upload, a missing slider value) name the input too.
        "show_error": True,
    }


def launch_single(create_demo: Callable[[Engine], gr.Blocks]) -> None:
    engine = start_engine(prog=os.path.basename(sys.argv[0]))
    settings = engine.settings
    demo = create_demo(engine)
    demo.queue(max_size=settings.queue_size).launch(**launch_options(settings))
