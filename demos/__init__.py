"""Gradio tabs, one small module per modality, all built by `demos.builder.create_demo`."""
