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


PathPart = str | int


class FieldError(ValueError):
    """A value of a request that the core refuses, with the field it belongs to.

    `path` locates the field in the request, e.g. `("extra_controls", 1, "guidance_start")` or
    `("preprocessor_params", "low_threshold")`; `problem` says what is wrong ("must be between 0 and
    1; got 2"). The message reads `<name> <problem>`, where `name` defaults to the dotted path: a UI
    maps the path to its own labels instead of reading the message.
    """

    def __init__(self, path: tuple[PathPart, ...], problem: str, name: str | None = None) -> None:
        self.path = tuple(path)
        self.problem = problem
        self.name = field_name(self.path) if name is None else name
        super().__init__(f"{self.name} {problem}" if self.name else problem)

    def within(self, *prefix: PathPart, name: str | None = None) -> FieldError:
        """The same error for a field nested under `prefix` (its message names the full path)."""
        path = (*prefix, *self.path)
        if name is None:
            name = field_name(prefix) + (f".{self.name}" if self.name else ":")
        error = type(self).__new__(type(self))
        FieldError.__init__(error, path, self.problem, name)
        return error


def field_name(path: tuple[PathPart, ...]) -> str:
    """`("extra_controls", 1, "guidance_start")` as `extra_controls[1].guidance_start`."""
    name = ""
    for part in path:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else part
    return name
