"""Start-up shared by app.py and the single tabs (`python demos/canny.py`): the settings, checked
before anything heavy starts, the folder the server writes to, and the options of every launch."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr

from controlnet_core import Engine, ServerFolder, Settings, check_can_start, settings_from_cli
from demos.running import KEYS_HEAD

log = logging.getLogger(__name__)


def start_engine(
    argv: Sequence[str] | None = None, settings: Settings | None = None, prog: str = "app.py"
) -> Engine:
    """The engine for the settings given, or else those of the command line and environment,
    checked before gradio starts (ranges, a free port, the MCP extra): a bad setting exits with a
    one-line message naming its flag or variable, without a traceback."""
    try:
        engine = Engine(settings or settings_from_cli(argv))
        engine.check_base_model()
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


# The results gallery (builder.results_area): gradio caps a gallery's grid at 55% of the window and
# cuts captions to one line; here tiles keep their whole image and captions wrap.
CSS = """
.backend-note { font-size: 0.9em; opacity: 0.85; }
footer { display: none !important; }
.cn-stop { background: #dc2626 !important; color: #fff !important; border-color: #b91c1c !important; }
.cn-results .grid-wrap { max-height: none !important; min-height: 0 !important; overflow-y: visible; }
.cn-results .grid-container { grid-auto-rows: auto; grid-template-rows: none; padding-top: var(--size-8); }
.cn-results .thumbnail-item { aspect-ratio: auto; height: auto; display: flex; flex-direction: column;
  overflow: visible; }
.cn-results .thumbnail-item > img { aspect-ratio: 1 / 1; height: auto; max-height: 60vh; flex: none; }
.cn-results .caption-label { position: static; max-width: none; white-space: normal; overflow: visible;
  text-overflow: clip; border: none; border-radius: 0; border-top: 1px solid var(--border-color-primary);
  line-height: 1.3; opacity: 1 !important; }
.cn-timeline .grid-container { grid-template-columns: repeat(6, minmax(0, 1fr)) !important; }
/* A long choice (on a phone) ends in "…" before the dropdown's arrow (drawn over the input's
   right end) instead of running under it. */
.secondary-wrap > input[role="combobox"] { text-overflow: ellipsis; padding-right: 28px !important; }
@media (max-width: 640px) {
  .cn-results .grid-container:has(> .gallery-item:nth-child(3)) {
    grid-template-columns: repeat(2, minmax(0, 1fr)) !important; }
  .cn-results.cn-timeline .grid-container:has(> .gallery-item) {
    grid-template-columns: repeat(3, minmax(0, 1fr)) !important; }
}
"""


def page_options() -> dict[str, Any]:
    """The look of every page, the whole app or one tab alone: theme, CSS and the keyboard script."""
    return {"css": CSS, "theme": gr.themes.Soft(), "head": KEYS_HEAD}


def serve(
    build: Callable[[], Any],
    settings: Settings,
    title: str = "ControlNet demo suite",
    warm_up: Callable[[], None] | None = None,
    **launch_extra: Any,
) -> None:
    """Build the page and serve it until Ctrl+C or SIGTERM, every file it writes in one folder.

    `build` fills the page: it runs inside the page's `gr.Blocks`, whose queue is set before any
    component exists (gradio rebuilds its whole app, every block's config, on `queue()`: on an
    empty page that costs nothing). gradio's cache (uploads, outputs) goes to
    `<GRADIO_TEMP_DIR or /tmp>/controlnet-demo-<pid>`, swept of files older than `cache_max_age`
    every `cache_sweep_interval` seconds, and removed when the server stops. `warm_up` runs in the
    background once the page answers.
    """
    chosen = os.environ.get("GRADIO_TEMP_DIR")
    folder = ServerFolder(chosen)
    os.environ["GRADIO_TEMP_DIR"] = str(folder.path)  # read by each component as it is built
    with gr.Blocks(title=title) as demo:
        demo.queue(max_size=settings.queue_size)
        build()
    folder.keep_present()  # the examples cached while building: every visitor needs them
    # gradio forgets the files it tracks on the same schedule; the sweeper also takes the rest.
    demo.delete_cache = (settings.cache_sweep_interval, settings.cache_max_age)
    folder.start_sweeper(settings.cache_sweep_interval, settings.cache_max_age)
    signal.signal(signal.SIGTERM, _stop)
    try:
        options = {**launch_options(settings), **page_options(), **launch_extra}
        demo.launch(prevent_thread_lock=True, **options)
        if warm_up is not None:
            threading.Thread(target=_warm_up, args=(warm_up,), name="warm-up", daemon=True).start()
        demo.block_thread()
    except KeyboardInterrupt:  # a second Ctrl+C while gradio was closing
        pass
    finally:
        folder.close()
        if chosen is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = chosen


def _warm_up(function: Callable[[], None]) -> None:
    try:
        function()
    except Exception:  # the first generation will meet the same problem and report it
        log.warning("warming up failed", exc_info=True)


def _stop(signum: int, frame: Any) -> None:
    """SIGTERM (how a container is stopped) ends the server as Ctrl+C does, once: gradio closes
    and the folder is removed, and a repeated signal does not interrupt that."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def launch_single(create_demo: Callable[[Engine], gr.Blocks]) -> None:
    engine = start_engine(prog=os.path.basename(sys.argv[0]))
    settings = engine.settings
    serve(lambda: create_demo(engine), settings, warm_up=engine.warm_up)
