"""Start-up shared by app.py and the single tabs (`python -m demos.canny`): the settings, checked
before anything heavy starts, the folder the server writes to, and the options of every launch."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr

from controlnet_core.engine import Engine
from controlnet_core.settings import Settings, check_can_start, settings_from_cli
from controlnet_core.storage import ServerFolder


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
        # Our handlers and guarded inputs (demos.hosting) turn every error into an escaped gr.Error,
        # which gradio always shows. Anything else gradio raises (a file path a client may not
        # use) shows as a plain "Error": its text names the server's folders.
        "show_error": False,
    }


def serve(build: Callable[[], gr.Blocks], settings: Settings, **launch_extra: Any) -> None:
    """Build the app and serve it until Ctrl+C or SIGTERM, every file it writes in one folder.

    gradio's cache (uploads, outputs) goes to `<GRADIO_TEMP_DIR or /tmp>/controlnet-demo-<pid>`,
    swept of files older than `cache_max_age` every `cache_sweep_interval` seconds, and removed when
    the server stops.
    """
    chosen = os.environ.get("GRADIO_TEMP_DIR")
    folder = ServerFolder(chosen)
    os.environ["GRADIO_TEMP_DIR"] = str(folder.path)  # read by each component as it is built
    demo = build()
    folder.keep_present()  # the examples cached while building: every visitor needs them
    # gradio forgets the files it tracks on the same schedule; the sweeper also takes the rest.
    demo.delete_cache = (settings.cache_sweep_interval, settings.cache_max_age)
    folder.start_sweeper(settings.cache_sweep_interval, settings.cache_max_age)
    signal.signal(signal.SIGTERM, _stop)
    try:
        demo.queue(max_size=settings.queue_size).launch(**launch_options(settings), **launch_extra)
    except KeyboardInterrupt:  # a second Ctrl+C while gradio was closing
        pass
    finally:
        folder.close()
        if chosen is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = chosen


def _stop(signum: int, frame: Any) -> None:
    """SIGTERM (how a container is stopped) ends the server as Ctrl+C does, once: gradio closes
    and the folder is removed, and a repeated signal does not interrupt that."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def launch_single(create_demo: Callable[[Engine], gr.Blocks]) -> None:
    engine = start_engine(prog=os.path.basename(sys.argv[0]))
    settings = engine.settings
    serve(lambda: create_demo(engine), settings)
