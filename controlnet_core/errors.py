"""How a value from a request appears inside an error message.

Error messages name the offending value so a user sees what was wrong, but the value comes from the
request: on a public server it may be megabytes long, or an object whose repr holds a memory address.
`shown` keeps the message short and free of such details; escaping for the page is the UI's job.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Collection, Mapping
from pathlib import Path
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


# An absolute path in a loader's message (the server's folders, the hub cache's): its last part.
# Not after a word, a dot, a colon, a slash or "~" (a URL's path, a path relative to home).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~])(?:/[^\s/'\"]+)+/([^\s/'\"]+)")


def _server_folders() -> list[str]:
    """The hub cache, its home and the temporary folder: where loaders find or put weights."""
    import tempfile

    from huggingface_hub import constants

    return [constants.HF_HUB_CACHE, constants.HF_HOME, tempfile.gettempdir()]


def _replace_path(text: str, path: str, name: str) -> str:
    """`text` with the folder `path` shown as `name` where it stands as a path of its own (not
    inside a URL or a longer name), as a whole or followed by what is in it."""
    pattern = rf"(?<![\w.:/~]){re.escape(path.rstrip('/'))}(?=/|$|[\s'\"),;])"
    return re.sub(pattern, lambda match: name, text)


def failure_reason(
    error: BaseException, private: Collection[str] = (), names: Mapping[str, str] | None = None
) -> str:
    """Why a load failed, for a public page: the first line of `error` (its type's name when it
    says nothing), with the server's paths named by their last part and the home folder as "~".

    `private` are more local paths to name so (the settings' folders, which a loader may quote
    relative or with spaces); `names` maps other text to what to show instead (a model's id).
    """
    text = str(error).strip()
    reason = text.splitlines()[0] if text else type(error).__name__
    for old, new in (names or {}).items():
        if old and old != new:
            reason = reason.replace(old, new)
    folders: dict[str, str] = {}
    for path in private:
        resolved = Path(path).expanduser().resolve()
        folders |= {path: resolved.name, str(resolved): resolved.name}
    # Folders a loader may quote that can hold spaces, which the pattern below stops at.
    folders |= {folder: Path(folder).name for folder in _server_folders()}
    home = str(Path.home())
    if len(home.strip("/")) > 0:  # a home of "/" (a container's nobody) is no folder to hide
        folders[home] = "~"
    for path in sorted(folders, key=len, reverse=True):
        # A path without a folder part ("." for the working folder) is no secret, and replacing
        # it would garble the text (every dot gone).
        if "/" in path and folders[path]:
            reason = _replace_path(reason, path, folders[path])
    return _ABSOLUTE_PATH.sub(r"\1", reason)
