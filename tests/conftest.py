"""Shared fixtures. Tests never touch the network: the hub is offline and gradio does not phone home."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Callable, Iterator, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from controlnet_core.engine import Engine  # noqa: E402
from controlnet_core.settings import Settings  # noqa: E402

# Small generation settings: GenerationRequest fields, and the endpoint parameters of the same
# names. A test that needs another value says so where it uses them: `{**FAST, "steps": 2}`.
FAST = {"prompt": "a red square", "steps": 3, "resolution": 64}


@pytest.fixture(scope="session")
def tiny_engine() -> Engine:
    return Engine(Settings(backend="tiny"))


@pytest.fixture
def square_image() -> np.ndarray:
    """A 64x64 white image with a black filled square in the middle."""
    image = np.full((64, 64, 3), 255, dtype=np.uint8)
    image[16:48, 16:48] = 0
    return image


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- served apps ------------------------------------------------------------------------------

ServeApp = Callable[..., tuple]


@pytest.fixture(scope="module")
def serve_app() -> Iterator[ServeApp]:
    """Serve apps for this test module; every one is closed when the module's tests are done.

    `serve(modality_ids=None, settings=None, combine=True)` builds the app (all tabs by default) on
    an engine with `settings` (the tiny backend by default), launches it on a free port and returns
    `(client, demo, engine)`.
    """
    from gradio_client import Client

    from app import build_app

    demos = []

    def serve(
        modality_ids: Sequence[str] | None = None,
        settings: Settings | None = None,
        combine: bool = True,
    ) -> tuple:
        engine = Engine(settings or Settings(backend="tiny"))
        demo = build_app(engine, modality_ids, combine=combine)
        port = free_port()
        demo.queue().launch(prevent_thread_lock=True, server_port=port, quiet=True)
        demos.append(demo)
        return Client(f"http://127.0.0.1:{port}", verbose=False), demo, engine

    yield serve
    for demo in demos:
        demo.close()


def endpoint_args(client, endpoint: str, **values) -> list:
    """Positional arguments for `endpoint`: its API defaults, with `values` by parameter name.

    Built from the API description, so parameters appended later keep their defaults; a name the
    endpoint does not have fails the test instead of silently leaving the default in place.
    """
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"][endpoint]
    names = [parameter["parameter_name"] for parameter in info["parameters"]]
    unknown = [name for name in values if name not in names]
    assert not unknown, f"{endpoint} has no parameter {unknown}; it has {names}"
    args = []
    for parameter in info["parameters"]:
        name = parameter["parameter_name"]
        if name in values:
            args.append(values[name])
        elif parameter.get("parameter_has_default"):
            args.append(parameter["parameter_default"])
        else:
            args.append(None)
    return args
