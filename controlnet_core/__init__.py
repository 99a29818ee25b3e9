"""ControlNet demo suite core: a gradio-free library."""

from controlnet_core.engine import Engine
from controlnet_core.settings import Settings

__all__ = ["Engine", "Settings"]
