"""Shared fixtures. Tests never touch the network: the hub is offline and gradio does not phone home."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import threading  # noqa: E402
from collections.abc import Callable, Iterable, Iterator, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from controlnet_core import Engine  # noqa: E402
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


# --- races ------------------------------------------------------------------------------------


class Arrivals:
    """Which of `threads` reached a point of a race; `wait_for(n)` blocks until n of them have.

    A thread that waits for the others inside a critical section (holding a lock they need) cannot
    meet them at a `threading.Barrier`: they report their arrival instead, through `ReportingLock`
    as they ask for the lock, or with `arrive()` where they would get in without it.
    """

    def __init__(self, threads: Iterable[threading.Thread]) -> None:
        self._threads = set(threads)
        self._arrived: set[threading.Thread] = set()
        self._changed = threading.Condition()

    def arrive(self) -> None:
        thread = threading.current_thread()
        if thread in self._threads:
            with self._changed:
                self._arrived.add(thread)
                self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self._arrived) >= count, timeout)
        assert arrived, f"only {len(self._arrived)} of {count} threads arrived in {timeout} s"


class ReportingLock:
    """A lock that reports each thread asking for it to `arrivals`, then takes `lock` as asked."""

    def __init__(self, lock, arrivals: Arrivals) -> None:
        self._lock = lock
        self._arrivals = arrivals

    def acquire(self, *args, **kwargs) -> bool:
        self._arrivals.arrive()
        return self._lock.acquire(*args, **kwargs)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """A tiny pipeline and its canny ControlNet saved with save_pretrained, as a user would have them."""
    from controlnet_core.tiny import tiny_controlnet, tiny_pipeline

    root = tmp_path_factory.mktemp("weights")
    pipe = tiny_pipeline()
    pipe.save_pretrained(root / "sd15")
    tiny_controlnet(pipe.unet, "canny").save_pretrained(
        root / "controlnets" / "control_v11p_sd15_canny"
    )
    return root
