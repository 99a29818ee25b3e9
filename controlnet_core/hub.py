"""Whether the Hugging Face hub can be used: switched off (HF_HUB_OFFLINE), or answering.

One probe (a TCP connection to the hub, at most `timeout` seconds) is remembered for a minute, so a
server with no network fails a missing download in seconds instead of retrying for each request.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from urllib.parse import urlparse

PROBE_TTL_S = 60.0
_probe_lock = threading.Lock()
_last_probe: tuple[float, bool] | None = None


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE asks huggingface_hub never to touch the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub (HF_ENDPOINT) accepts a connection; the answer is kept for a minute."""
    global _last_probe
    with _probe_lock:
        if _last_probe is not None and time.monotonic() - _last_probe[0] < PROBE_TTL_S:
            return _last_probe[1]
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        host = urlparse(endpoint).hostname or "huggingface.co"
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                answer = True
        except OSError:
            answer = False
        _last_probe = (time.monotonic(), answer)
        return answer


def hub_answers(timeout: float = 3.0) -> bool:
    """Whether hub weights can be downloaded now: the hub is not switched off and it answers."""
    return not hub_offline() and hub_reachable(timeout)
