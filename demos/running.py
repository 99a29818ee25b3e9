"""The run buttons of a tab: Generate, Compare, Sweep (and a preview), and Stop while a run goes.

While a run is in flight its three buttons are disabled (a double click, or Generate then Compare,
would queue a second run) and Stop is shown; Stop cancels the run, which the engine notices within one
denoising step (see `demos.hosting.report`). The named API endpoint of each run is the handler itself:
the steps that switch the buttons are private and run in the browser's event chain only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

Run = tuple[Callable, Sequence[Any], dict[str, Any]]  # handler, its inputs, its endpoint options

# Bring the results column into view when a run ends, only when it is off screen: on a phone it sits
# far below the buttons; a desktop does not jump.
SCROLL_TO_RESULTS = """() => {
  const col = [...document.querySelectorAll(".cn-results-col")].find((c) => c.offsetParent);
  if (!col) return;
  const top = col.getBoundingClientRect().top;
  if (top < 0 || top > innerHeight * 0.5) col.scrollIntoView({behavior: "smooth", block: "start"});
}"""

# Where the results come below the form (a phone, a narrow window: gradio stacks the columns), a
# run brings them into view when it starts, so the image is seen forming (the live previews); a
# second Stop sits there (`RunButtons.stop_by_results`). Beside the form they are in view already.
SCROLL_TO_RESULTS_WHEN_BELOW = (
    """() => {
  const col = [...document.querySelectorAll(".cn-results-col")].find((c) => c.offsetParent);
  const form = col && col.previousElementSibling;
  if (!form || col.getBoundingClientRect().top <= form.getBoundingClientRect().top + 1) return;
  ("""
    + SCROLL_TO_RESULTS
    + """)();
}"""
)

# Ctrl/Cmd+Enter (and Shift+Enter, gradio's own) in a prompt clicks its tab's Generate button, so a
# disabled button (a run in flight) also blocks the keyboard. Passed to launch(head=...).
KEYS_HEAD = """<script>
document.addEventListener("keydown", (e) => {
  if (e.key !== "Enter" || e.isComposing || !(e.ctrlKey || e.metaKey || e.shiftKey)) return;
  const box = e.target.closest && e.target.closest(".cn-prompt");
  if (!box) return;
  let scope = box.parentElement;
  while (scope && !scope.querySelector(".cn-generate")) scope = scope.parentElement;
  const button = scope && scope.querySelector(".cn-generate");
  if (!button) return;
  e.preventDefault(); e.stopPropagation();
  if (!button.disabled) button.click();
}, true);
</script>"""


@dataclass
class RunButtons:
    generate: gr.Button
    preview: gr.Button
    compare: gr.Button | None
    sweep: gr.Button | None
    stop: gr.Button
    enabled: bool  # False: this backend cannot generate for the tab (a preview still works)
    # Stop again above the results (`results_stop`), in view while a run shows its image forming.
    stop_by_results: gr.Button | None = None

    @property
    def runs(self) -> list[gr.Button]:
        return [b for b in (self.generate, self.compare, self.sweep) if b is not None]

    def wire(
        self,
        *,
        generate: Run,
        compare: Run,
        sweep: Run | None = None,
        outputs: Sequence[Any],
        results: gr.components.Component,
    ) -> None:
        """Attach each run to its button, with Stop.

        In gradio 6 a run's `.then` follows a success and a cancel but not an error: `.failure`
        re-enables the buttons then, and clears the "Error" mark over the results (their previous
        images stay; the message is in the toast).
        """
        common = {"outputs": list(outputs), "concurrency_id": "generate"}
        # Progress and errors show on the results only, not as "Error" pills over the seed box.
        common["show_progress_on"] = [results]
        events = []
        triggers = [(self.generate, generate), (self.compare, compare)]
        if sweep is not None:
            triggers.append((self.sweep, sweep))
        for button, (fn, inputs, options) in triggers:
            started = button.click(
                self._busy, outputs=self._switched, js=SCROLL_TO_RESULTS_WHEN_BELOW, **_instant()
            )
            run = started.then(fn, inputs=list(inputs), **options, **common)
            run.then(self._idle, outputs=self._switched, js=SCROLL_TO_RESULTS, **_instant())
            run.failure(
                lambda: [*self._idle(), gr.skip()],
                outputs=[*self._switched, results],
                **_instant(),
            )
            events.append(run)
        for stop in self._stops:
            if isinstance(results, gr.Gallery):  # one event: every event costs start-up time
                stop.click(
                    lambda items: [*self._idle(), stopped_captions(items)],
                    inputs=results,
                    outputs=[*self._switched, results],
                    cancels=events,
                    **_instant(),
                )
            else:
                stop.click(self._idle, outputs=self._switched, cancels=events, **_instant())

    @property
    def _stops(self) -> list[gr.Button]:
        return [self.stop] + ([self.stop_by_results] if self.stop_by_results else [])

    @property
    def _switched(self) -> list[gr.Button]:
        return [*self.runs, self.preview, *self._stops]

    def _busy(self):
        buttons = [gr.update(interactive=False) for _ in [*self.runs, self.preview]]
        return buttons + [gr.update(visible=True) for _ in self._stops]

    def _idle(self):
        runs = [gr.update(interactive=self.enabled) for _ in self.runs]
        stops = [gr.update(visible=False) for _ in self._stops]
        return [*runs, gr.update(interactive=True), *stops]


FORMING = "forming…"  # the caption of a live preview: "forming… step 3 of 20"


def stopped_captions(items: list | None):
    """The gallery after Stop: a stopped run's previews say so ("stopped at step 3 of 20"),
    rather than look as if it still went on; finished images stay as they are."""
    if not items or not any(caption and caption.startswith(FORMING) for _, caption in items):
        return gr.skip()
    return [
        (image, caption.replace(FORMING, "stopped at", 1) if caption else caption)
        for image, caption in items
    ]


def _instant() -> dict[str, Any]:
    """Options of the button-switching steps: no queue, no API endpoint, no progress display."""
    return {"queue": False, "api_visibility": "private", "show_progress": "hidden"}


def results_stop() -> gr.Button:
    """The Stop above a results column, shown while a run goes (see `RunButtons`)."""
    return gr.Button("Stop", variant="stop", visible=False, elem_classes=["cn-stop"], size="sm")


def run_buttons(enabled: bool, with_sweep: bool = True, with_preview: bool = True) -> RunButtons:
    """Generate and Preview map, Compare and Sweep, and a Stop button hidden until a run starts."""
    why = None if enabled else "This backend has no ControlNet for this tab (see the note)."
    with gr.Row():
        generate = gr.Button(
            "Generate", variant="primary", interactive=enabled, elem_classes=["cn-generate"]
        )
        preview = gr.Button("Preview map", visible=with_preview)
    with gr.Row():
        compare = gr.Button("Compare with plain SD", interactive=enabled)
        sweep = gr.Button("Sweep", interactive=enabled) if with_sweep else None
    stop = gr.Button("Stop", variant="stop", visible=False, elem_classes=["cn-stop"])
    if why:
        gr.Markdown(f"*{why} Preview map works.*", elem_classes=["backend-note"])
    else:
        gr.Markdown("Ctrl+Enter (⌘+Enter) in the prompt generates.", elem_classes=["backend-note"])
    return RunButtons(generate, preview, compare, sweep, stop, enabled)
