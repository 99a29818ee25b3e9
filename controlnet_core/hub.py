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
_last_probe: tuple[float, tuple[str, int], bool] | None = None


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE asks huggingface_hub never to touch the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub (HF_ENDPOINT, its own port) accepts a connection; kept for a minute.

    Behind a proxy a direct connection says nothing: the answer is yes, and huggingface_hub
    (which uses the proxy) decides.
    """
    global _last_probe
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    target = (url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443))
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return True
    with _probe_lock:
        if (
            _last_probe is not None
            and _last_probe[1] == target
            and time.monotonic() - _last_probe[0] < PROBE_TTL_S
        ):
            return _last_probe[2]
        try:
            with socket.create_connection(target, timeout=timeout):
                answer = True
        except OSError:
            answer = False
        _last_probe = (time.monotonic(), target, answer)
        return answer


def hub_answers(timeout: float = 3.0) -> bool:
    """Whether hub weights can be downloaded now: the hub is not switched off and it answers."""
    return not hub_offline() and hub_reachable(timeout)
