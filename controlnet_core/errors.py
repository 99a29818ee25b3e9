"""How a value from a request appears inside an error message.

Error messages name the offending value so a user sees what was wrong, but the value comes from the
request: on a public server it may be megabytes long, or an object whose repr holds a memory address.
`shown` keeps the message short and free of such details; escaping for the page is the UI's job.
"""

from __future__ import annotations

import reprlib
from typing import Any

_SHORT = reprlib.Repr()  # keyword arguments only from Python 3.12
_SHORT.maxstring, _SHORT.maxlong, _SHORT.maxother = 60, 40, 40
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 6
_SHORT.maxlevel = 2
_PLAIN_TYPES = (str, bytes, int, float, bool, type(None), list, tuple, dict, set, frozenset)


def shown(value: Any) -> str:
    """A short repr of `value` for an error message: long text and containers are cut with '...'.

    Objects other than plain data show their type name only (`<ndarray>`), never a repr that may be
    huge or hold a memory address.
    """
    if isinstance(value, _PLAIN_TYPES):
        return _SHORT.repr(value)
    return f"<{type(value).__name__}>"
