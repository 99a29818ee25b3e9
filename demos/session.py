"""ControlNet weights a browser session chose for itself (the training lab's "use these weights").

They apply to that session's generations only: other users keep the backend's weights. Kept for at
most MAX_SESSIONS sessions (the oldest choice is forgotten first), in memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

MAX_SESSIONS = 16
_chosen: OrderedDict[str, dict[str, Any]] = OrderedDict()
_lock = threading.Lock()


def session_id() -> str | None:
    """The browser session of the running event (None outside one)."""
    from gradio.context import LocalContext

    request = LocalContext.request.get(None)
    return getattr(request, "session_hash", None)


def use_for_session(weights: Any) -> None:
    """This session's generations use `weights` (with `key`, `model_id`, `model`) from now on."""
    session = session_id()
    if session is None:
        return
    with _lock:
        _chosen.setdefault(session, {})[weights.key] = weights
        _chosen.move_to_end(session)
        while len(_chosen) > MAX_SESSIONS:
            _chosen.popitem(last=False)


def forget_for_session() -> None:
    with _lock:
        _chosen.pop(session_id() or "", None)


def session_controlnets() -> dict[str, Any]:
    """ControlNet key -> weights this session chose (for `Engine.generate(controlnets=...)`)."""
    session = session_id()
    with _lock:
        return dict(_chosen.get(session or "", {}))
