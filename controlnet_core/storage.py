"""The one folder a server process writes to, swept by age and removed at shutdown.

A public server writes files for every request: uploads, output PNGs, gradio's copies. Left alone they
grow without end. The app gives gradio (GRADIO_TEMP_DIR) a folder of its own, named after the process,
and a sweeper thread deletes what is older than the age limit; at a clean shutdown the folder goes. A
folder left by a process that was killed is removed by the next one to start in the same place.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "controlnet-demo-"


class ServerFolder:
    """A process-owned folder (`<parent>/controlnet-demo-<pid>`) with an age-based sweeper."""

    def __init__(self, parent: str | os.PathLike | None = None) -> None:
        parent_path = Path(parent or tempfile.gettempdir())
        parent_path.mkdir(parents=True, exist_ok=True)
        remove_orphans(parent_path)
        self.path = parent_path / f"{PREFIX}{os.getpid()}"
        self.path.mkdir(exist_ok=True)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._kept: set[Path] = set()

    def keep_present(self) -> int:
        """Exempt the files there now from sweeping (what the app wrote while it was built, such as
        its cached example images, which every later visitor needs); returns how many."""
        self._kept = {Path(root) / name for root, _, files in os.walk(self.path) for name in files}
        return len(self._kept)

    def sweep(self, max_age: float, now: float | None = None) -> int:
        """Delete files older than `max_age` seconds (by modification time), and empty folders as old.

        Returns the number of files deleted. Files that vanish meanwhile are skipped.
        """
        now = time.time() if now is None else now
        deleted = 0
        for root, folders, files in os.walk(self.path, topdown=False):
            for name in files:
                path = Path(root) / name
                if path in self._kept:
                    continue
                try:
                    if now - path.lstat().st_mtime > max_age:
                        path.unlink()
                        deleted += 1
                except FileNotFoundError:
                    continue
            for name in folders:
                folder = Path(root) / name
                try:
                    # Old and empty only: a folder just made is about to receive its file.
                    if now - folder.stat().st_mtime > max_age:
                        folder.rmdir()  # fails unless empty
                except OSError:
                    continue
        return deleted

    def start_sweeper(self, interval: float, max_age: float) -> None:
        """Sweep every `interval` seconds in a daemon thread until `close`."""

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    deleted = self.sweep(max_age)
                except OSError:
                    log.exception("sweeping %s failed", self.path)
                    continue
                if deleted:
                    log.info("swept %d files older than %d s", deleted, max_age)

        self._thread = threading.Thread(target=loop, name="controlnet-sweeper", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the sweeper and remove the folder with everything in it."""
        self._stop.set()
        shutil.rmtree(self.path, ignore_errors=True)

    def file_count(self) -> int:
        return sum(len(files) for _, _, files in os.walk(self.path))


def remove_orphans(parent: Path) -> list[Path]:
    """Remove `controlnet-demo-<pid>` folders under `parent` whose process no longer runs."""
    removed = []
    for folder in parent.glob(f"{PREFIX}*"):
        pid_text = folder.name[len(PREFIX) :]
        if not folder.is_dir() or not pid_text.isdigit() or _running(int(pid_text)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
