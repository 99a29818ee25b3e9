"""What a public server needs from every tab: safe error text, work that stops when the user leaves,
bounded canvas inputs, and output files written once where the cache sweeper finds them.

Gradio shows an error's message as HTML, and our messages repeat the offending value from the request,
so every message is escaped and shortened here, at the edge. Gradio cannot stop a function running in a
worker thread when its event is cancelled (or the browser tab closes): the progress callback asks the
queue whether the event is still wanted and raises `GenerationCancelled` when it is not, so the engine
stops within one denoising step.
"""

from __future__ import annotations

import contextvars
import functools
import html
import inspect
import logging
import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from controlnet_core import (
    FieldError,
    GenerationCancelled,
    GenerationResult,
    ModelFamilyError,
    PreviewCallback,
    ProgressCallback,
    WeightsUnavailableError,
    check_pixels,
)
from demos.texts import missing_weights_message

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 1500
MAX_CANVAS_LAYERS = 8


def page_text(message: str) -> str:
    """`message` as plain text for gradio's HTML pop-up: escaped, at most MAX_MESSAGE_CHARS long."""
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return html.escape(message, quote=False)


FieldLabels = Callable[[tuple], "str | None"]


def user_errors(fn: Callable | None = None, *, labels: FieldLabels | None = None) -> Callable:
    """Turn every failure of a handler into a short, escaped message on the page; never a traceback.

    A refused field (`FieldError`) is named by `labels(path)`, the page's label for it ("ControlNet
    2 · Control starts at"), when the handler's form knows the path. A generation stopped because its
    user left ends quietly: nobody is there to read a message.
    """
    if fn is None:
        return functools.partial(user_errors, labels=labels)

    def page_error(error: BaseException) -> gr.Error:
        title, message, duration = None, "", 10.0
        if isinstance(error, gr.Error):
            title, message, duration = error.title, error.message, error.duration
        elif isinstance(error, GenerationCancelled):
            log.info("generation cancelled: the request is gone")
            title, message = "Cancelled", "The generation was cancelled."
        elif isinstance(error, WeightsUnavailableError):
            title, message, duration = "Weights unavailable", missing_weights_message(error), 30.0
        elif isinstance(error, ModelFamilyError):
            title, message, duration = "Model mismatch", str(error), 30.0
        elif isinstance(error, FieldError):
            title, message = "Invalid input", field_message(error, labels)
        elif isinstance(error, ValueError):
            title, message = "Invalid input", str(error)
        else:  # the page gets a message; the console keeps the traceback
            log.error("request failed", exc_info=error)
            title, message = "Something went wrong", f"Generation failed: {type(error).__name__}"
        return gr.Error(
            page_text(message), title=title or "Error", duration=duration, print_exception=False
        )

    # The error is raised after the `except` block, so it does not chain the original exception,
    # whose traceback would keep the cancelled generation's tensors alive.
    if inspect.isgeneratorfunction(fn):  # a run that shows its images forming

        @functools.wraps(fn)
        def streaming(*args, **kwargs):
            failed = None
            try:
                yield from fn(*args, **kwargs)
            except Exception as error:
                failed = page_error(error)
            if failed is not None:
                raise failed

        return streaming

    @functools.wraps(fn)  # keeps the signature: gradio finds `progress=gr.Progress()` through it
    def wrapper(*args, **kwargs):
        failed = None
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            failed = page_error(error)
        raise failed

    return wrapper


def with_previews(
    run: Callable[[PreviewCallback, ProgressCallback], GenerationResult],
    show_final: Callable[[GenerationResult], tuple],
    show_preview: Callable[[int, int, list], tuple],
    progress: ProgressCallback | None = None,
) -> Iterator[tuple]:
    """Yield the outputs of a run while it goes: `show_preview(step, total, images)` for each image
    the engine shows forming, then `show_final(result)`.

    `run(preview, progress)` (an engine call) runs in a worker thread with this event's context, so
    `progress` (see `report`) shows on the page and checks that the event is still wanted as in a
    plain handler. When gradio stops iterating (the event was cancelled, the page left), the run
    stops at its next step or preview.
    """
    updates: queue.Queue = queue.Queue()
    stopped = threading.Event()

    def check() -> None:
        if stopped.is_set():
            raise GenerationCancelled("the page stopped listening")

    def preview(step: int, total: int, images: list) -> None:
        check()
        updates.put(("preview", (step, total, images)))

    def step(fraction: float, text: str) -> None:
        check()
        if progress is not None:
            progress(fraction, text)

    def work() -> None:
        try:
            updates.put(("done", run(preview, step)))
        except BaseException as error:  # handed to the event's own thread, which reports it
            if stopped.is_set() and not isinstance(error, GenerationCancelled):
                log.error("a run failed after its page stopped listening", exc_info=error)
            updates.put(("failed", error))

    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(work,), name="generation", daemon=True).start()
    try:
        while True:
            kind, value = updates.get()
            if kind == "preview":
                yield show_preview(*value)
            elif kind == "done":
                yield show_final(value)
                return
            else:
                raise value
    finally:
        stopped.set()


def field_message(error: FieldError, labels: FieldLabels | None) -> str:
    """`error` with its field named by the page's label when there is one, else by its path."""
    label = labels(error.path) if labels is not None else None
    return f"{label}: {error.problem}" if label else str(error)


def event_wanted() -> bool:
    """False once the queue has dropped the running event (cancelled, or its browser tab closed).

    Outside a queued gradio event (a direct call, a script) there is nothing to cancel: True.
    """
    from gradio.context import LocalContext

    blocks = LocalContext.blocks.get(None)
    event_id = LocalContext.event_id.get(None)
    queue = getattr(blocks, "_queue", None)
    if queue is None or event_id is None:
        return True
    for job in list(queue.active_jobs):
        for event in job or ():
            if event._id == event_id:
                return event.alive
    return False


def report(progress: gr.Progress) -> Callable[[float, str], None]:
    """The engine's progress callback: shown on gradio's progress bar, and the point where a
    generation nobody waits for any more is stopped (GenerationCancelled)."""
    progress(0.0, desc="Starting…")

    def callback(fraction: float, text: str) -> None:
        if not event_wanted():
            raise GenerationCancelled(text)
        progress(fraction, desc=text)

    return callback


def light_work(settings: Any) -> dict[str, Any]:
    """Event options for the quick handlers that still decode images (map previews, recipe loads,
    presets): one shared group with a small limit, so N clients cannot decode N big images at once.
    Generations have their own group ("generate") of one."""
    return {
        "concurrency_id": "light",
        "concurrency_limit": settings.preview_concurrency,
    }


def refuse_bad_uploads(image: gr.Image, label: str, engine: Any) -> None:
    """An upload this server would refuse (no image, over the byte or pixel limit) is named as
    soon as it arrives and taken out of the box, rather than at Generate. Only its header is read.
    (A file that is no image at all is already refused by gradio's own reading, see
    `guard_inputs`.)"""

    def check(path: str | None):
        if not path:
            return gr.update()
        try:
            engine.check_image_file(path)
        except ValueError as error:
            gr.Warning(page_text(f"{label}: {error}"))
            return None
        return gr.update()

    image.upload(
        check,
        inputs=image,
        outputs=image,
        api_visibility="private",
        show_progress="hidden",
        # A header read: not queued, so a busy server's full queue does not refuse an upload.
        queue=False,
    )


def limit_canvas_input(editor: gr.ImageEditor, max_pixels: int) -> gr.ImageEditor:
    """Refuse an oversized canvas value from the image headers, before gradio decodes its layers.

    gr.ImageEditor decodes the background, every layer and the composite of what the client sends;
    a crafted request could send many huge layers. The page's own canvas stays far below the limit.
    """
    preprocess = editor.preprocess

    @functools.wraps(preprocess)
    def bounded(payload):
        if payload is not None and payload.id is None:
            layers = list(payload.layers or [])
            if len(layers) > MAX_CANVAS_LAYERS:
                raise gr.Error(f"A canvas takes at most {MAX_CANVAS_LAYERS} layers.")
            for part in [payload.background, payload.composite, *layers]:
                path = getattr(part, "path", None)
                if path:
                    try:
                        with Image.open(path) as image:
                            check_pixels(image.size, max_pixels)
                    except ValueError as error:
                        raise gr.Error(str(error)) from None  # escaped by guard_inputs
                    except (OSError, SyntaxError, Image.DecompressionBombError):
                        raise gr.Error("The canvas could not be read; draw again.") from None
        return preprocess(payload)

    editor.preprocess = bounded
    return editor


def guard_inputs(container: gr.blocks.BlockContext) -> None:
    """Make gradio's own input checks speak like ours: escaped text that names the input.

    Before a handler runs, gradio converts each input (opens an uploaded image's header, checks a
    dropdown's value against its choices). Its messages echo the request's value unescaped, and
    other failures carry the server's file paths; each input's conversion is wrapped here.
    """
    for block in _descendants(container):
        if isinstance(block, gr.components.Component) and not getattr(block, "_guarded", False):
            images = isinstance(block, (gr.Image, gr.ImageEditor))
            unreadable = (
                "this is not an image that can be read (PNG, JPEG, WebP, BMP, TIFF…)"
                if images
                else "this value could not be read; set it again"
            )
            label = block.label or type(block).__name__
            block.preprocess = _guarded(block.preprocess, label, unreadable)
            block._guarded = True


def _descendants(container: Any):
    for child in getattr(container, "children", []):
        yield child
        yield from _descendants(child)


def _guarded(preprocess: Callable, label: str, unreadable: str) -> Callable:
    @functools.wraps(preprocess)
    def checked(payload):
        try:
            return preprocess(payload)
        except gr.Error as error:
            message = page_text(f"{label}: {error.message}")
        except Exception:
            log.info("input %r could not be read", label, exc_info=True)
            message = page_text(f"{label}: {unreadable}.")
        raise gr.Error(message, print_exception=False)

    return checked


def output_folder() -> Path:
    """A fresh folder for one result's files, inside gradio's cache folder.

    Files already in the cache are served as they are (not copied a second time), and the cache is
    what `delete_cache` and the app's sweeper clean (see controlnet_core.storage).
    """
    from gradio.utils import get_upload_folder

    folder = Path(get_upload_folder()) / "outputs" / uuid.uuid4().hex
    folder.mkdir(parents=True, exist_ok=True)
    return folder
