"""Small building blocks that several tab modules share (examples that also pick a preprocessor)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gradio as gr

from demos.builder import TabView

ExampleRow = tuple[str, str, str]  # (image path, prompt, preprocessor id)


def add_examples(tab: TabView, rows: Sequence[ExampleRow]) -> gr.Examples:
    """Examples that set the input image, the prompt and the preprocessor (e.g. an offline one).

    Rows whose preprocessor cannot run on this server (hub weights, offline) are left out.
    """
    for _, _, preprocessor in rows:
        if preprocessor not in tab.modality.preprocessors:
            raise ValueError(
                f"example preprocessor {preprocessor!r} is not one of {tab.modality.label}'s: "
                f"{list(tab.modality.preprocessors)}"
            )
    return gr.Examples(
        examples=[list(row) for row in rows if tab.runs_here(row[2])],
        inputs=[tab.source, tab.prompt, tab.preprocessor],
        label="Examples (bundled images; each picks a preprocessor)",
    )


def examples_hook(rows: Sequence[ExampleRow]) -> Callable[[TabView], None]:
    """An `extra_inputs` hook for `builder.create_demo` that only adds `add_examples(rows)`."""

    def hook(tab: TabView) -> None:
        add_examples(tab, rows)

    return hook
