"""Hosted-grade reliability checks (issue 18) against `python app.py --backend tiny`.

Each subcommand starts its own server on a free port of 127.0.0.1 (offline: HF_HUB_OFFLINE=1,
GRADIO_ANALYTICS_ENABLED=False), with GRADIO_TEMP_DIR and TMPDIR pointed at fresh folders of its
own, drives it with gradio_client, prints a table of figures, stops it with SIGINT (then SIGTERM,
then SIGKILL) and reports what the server left on disk:

    python scripts/hosted_check.py soak --requests 200   # RSS and files every 20 requests
    python scripts/hosted_check.py cancel --rounds 3     # CPU after job.cancel(), slowdown
    python scripts/hosted_check.py burst --clients 8     # 13000x13000 PNG previews at once
    python scripts/hosted_check.py errors                # hostile inputs: the error text shown

Common options (after the subcommand name):
    --app-dir DIR         the checkout to serve (default: this script's repository)
    --server-arg ARG      extra flag for app.py, repeatable: --server-arg=--queue-size=4
    --env KEY=VALUE       extra environment variable for the server, repeatable
    --system-tmp          leave TMPDIR alone (count what appears new under the real temp folder)
    --keep                keep the run folder (server log, temp folders) instead of deleting it

The server's own TMPDIR is private by default, so "new under tempfile.gettempdir()" counts only
what this server wrote (other processes on the machine write to /tmp too). Only 127.0.0.1 is
contacted; every loop is bounded in count and time. Server figures come from /proc: VmRSS and
Threads from /proc/PID/status, CPU time from fields 14+15 (utime+stime) of /proc/PID/stat.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from gradio_client import Client, handle_file
from gradio_client.utils import Status
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
OUTPUTS_FOLDER = "controlnet-demo-outputs"  # the app's own folder under tempfile.gettempdir()
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SMALL = {"resolution": 64, "steps": 2, "randomize_seed": False, "num_images": 1}
HOSTILE_LINK = '<a href="https://example.invalid">Session expired</a>'
RUNNING = {Status.PROCESSING, Status.PROGRESS, Status.ITERATING}


# --------------------------------------------------------------------------- machine and output


def cpu_summary() -> str:
    """`lscpu` model name, whether the CPU has AVX512-BF16, cores and the load (the machine may be
    shared: a busy neighbour slows every figure)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        text = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^(?:Model name|model name)\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^(?:Flags|flags)\s*:\s*(.+)$", text, re.M)
    bf16 = "yes" if flags and "avx512_bf16" in flags.group(1).split() else "no"
    name = model.group(1).strip() if model else "unknown"
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return f"CPU: {name} | avx512_bf16: {bf16} | cores: {os.cpu_count()} | load average: {load}"


def code_version(app_dir: Path) -> str:
    try:
        result = subprocess.run(
            ["git", "-C", str(app_dir), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "not a git checkout"


def table(headers: list[str], rows: list[list[Any]]) -> None:
    """Print rows under headers: the first and last columns left-aligned, the others right."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    last = len(headers) - 1
    for row in cells:
        aligned = [
            cell.ljust(width) if i in (0, last) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(aligned).rstrip(), flush=True)


def short(text: Any, limit: int = 120) -> str:
    """One line, at most `limit` characters, for a table cell."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- the server process


@dataclass
class Server:
    """`python app.py --backend tiny` in a subprocess, with private temp folders."""

    app_dir: Path
    server_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    system_tmp: bool = False
    startup_timeout: float = 180.0

    def __post_init__(self) -> None:
        self.run_dir = Path(tempfile.mkdtemp(prefix="hosted-check-"))
        self.gradio_dir = self.run_dir / "gradio"
        self.tmp_dir = Path(tempfile.gettempdir()) if self.system_tmp else self.run_dir / "tmp"
        self.scratch = self.run_dir / "inputs"  # files this script makes; not counted
        for folder in (self.gradio_dir, self.tmp_dir, self.scratch):
            folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.run_dir / "server.log"
        self.process: subprocess.Popen | None = None
        self.tmp_before: set[str] = set()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HF_HUB_OFFLINE="1",
            GRADIO_ANALYTICS_ENABLED="False",
            GRADIO_TEMP_DIR=str(self.gradio_dir),
            PYTHONUNBUFFERED="1",
        )
        if not self.system_tmp:
            env["TMPDIR"] = str(self.tmp_dir)
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        env = self.environment()
        self.tmp_dir = Path(env.get("TMPDIR") or tempfile.gettempdir())
        self.tmp_before = set(os.listdir(self.tmp_dir))
        command = [sys.executable, "app.py", "--backend", "tiny", "--port", str(self.port)]
        command += self.server_args
        print(
            f"server: {' '.join(command[1:])}  (in {self.app_dir}, code {code_version(self.app_dir)})"
        )
        print(f"run folder: {self.run_dir}  GRADIO_TEMP_DIR=gradio/  TMPDIR={self.tmp_dir}")
        began = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.app_dir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in this terminal reaches it only through stop()
            )
        deadline = began + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if answers(f"{self.url}/gradio_api/info"):
                print(f"server up in {time.monotonic() - began:.1f} s, pid {self.pid}")
                return
            time.sleep(0.25)
        raise RuntimeError(
            f"server did not answer in {self.startup_timeout:.0f} s:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 20.0) -> str:
        """SIGINT, then SIGTERM, then SIGKILL; says which one ended it and how long it took."""
        if self.process is None:
            return "never started"
        if self.process.poll() is not None:
            return f"had already exited (code {self.process.returncode})"
        began = time.monotonic()
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                code = self.process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            took = time.monotonic() - began
            return f"stopped by {sig.name} after {took:.1f} s (exit code {code})"
        return "did not stop"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def proc_status(self, key: str) -> int:
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        match = re.search(rf"^{key}:\s*(\d+)", text, re.M)
        return int(match.group(1)) if match else 0

    def rss_mb(self) -> float:
        return self.proc_status("VmRSS") / 1024

    def threads(self) -> int:
        return self.proc_status("Threads")

    def cpu_seconds(self) -> float:
        """utime + stime (fields 14 and 15 of /proc/PID/stat), all threads, in seconds."""
        try:
            text = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return 0.0
        after_name = text[text.rindex(")") + 2 :].split()  # field 3 onwards
        return (int(after_name[11]) + int(after_name[12])) / CLOCK_TICKS

    def disk(self) -> dict[str, tuple[int, int]]:
        """(files, bytes) under gradio's temp folder, the app's outputs, and anything else new
        under the server's temp folder."""
        outputs = self.tmp_dir / OUTPUTS_FOLDER
        skip = {self.gradio_dir.resolve(), outputs.resolve(), self.run_dir.resolve()}
        new = [
            self.tmp_dir / name
            for name in set(os.listdir(self.tmp_dir)) - self.tmp_before
            if (self.tmp_dir / name).resolve() not in skip
        ]
        return {
            "gradio": count_files([self.gradio_dir]),
            "outputs": count_files([outputs]),
            "tmp-new": count_files(new),
        }

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def log_summary(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"{len(text.splitlines())} lines, {text.count('Traceback (most recent')} tracebacks"


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


def count_files(roots: list[Path]) -> tuple[int, int]:
    files = size = 0
    for root in roots:
        if root.is_file():
            files, size = files + 1, size + root.stat().st_size
            continue
        for folder, _, names in os.walk(root):
            for name in names:
                with contextlib.suppress(OSError):  # removed while we walk
                    size += os.lstat(os.path.join(folder, name)).st_size
                    files += 1
    return files, size


def disk_cells(usage: dict[str, tuple[int, int]]) -> list[Any]:
    total = sum(size for _, size in usage.values())
    return [usage["gradio"][0], usage["outputs"][0], usage["tmp-new"][0], f"{total / 1e6:.1f}"]


DISK_HEADERS = ["gradio_files", "outputs_files", "tmp_new_files", "disk_MB"]


# --------------------------------------------------------------------------- client helpers


class Api:
    """Endpoint arguments from the server's own API description (defaults, overridden by name)."""

    def __init__(self, client: Client):
        self.client = client
        self.info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]

    def names(self, endpoint: str) -> list[str]:
        return [p["parameter_name"] for p in self.info[endpoint]["parameters"]]

    def args(self, endpoint: str, first: Any, **overrides: Any) -> list[Any]:
        values = []
        for parameter in self.info[endpoint]["parameters"]:
            name = parameter["parameter_name"]
            if name in overrides:
                values.append(overrides[name])
            elif parameter.get("parameter_has_default"):
                values.append(parameter["parameter_default"])
            else:
                values.append(None)
        values[0] = first
        return values

    def slider_maximum(self, endpoint: str, parameter: str, fallback: int) -> int:
        """The `maximum` of the component behind an endpoint parameter (the server's limit)."""
        dependency = self.dependency(endpoint)
        try:
            component_id = dependency["inputs"][self.names(endpoint).index(parameter)]
        except (KeyError, ValueError, IndexError):
            return fallback
        for component in self.client.config["components"]:
            if component["id"] == component_id:
                return int(component.get("props", {}).get("maximum", fallback))
        return fallback

    def dependency(self, endpoint: str) -> dict[str, Any]:
        for index, dependency in enumerate(self.client.config["dependencies"]):
            if dependency.get("api_name") == endpoint.lstrip("/"):
                return {"id": index, **dependency}
        raise KeyError(endpoint)


def error_text(error: BaseException) -> str:
    return str(getattr(error, "message", "") or error) or type(error).__name__


def call(client: Client, endpoint: str, args: list[Any], timeout: float) -> tuple[bool, Any, float]:
    """(ok, result or error text, seconds) of one request, bounded by `timeout`."""
    began = time.monotonic()
    job = client.submit(*args, api_name=endpoint)
    try:
        result = job.result(timeout=timeout)
    except Exception as error:  # every failure is a figure here
        if not job.done():
            job.cancel()
        return False, error_text(error), time.monotonic() - began
    return True, result, time.monotonic() - began


def raw_call(
    server: Server, api: Api, endpoint: str, data: list[Any], timeout: float
) -> tuple[bool, Any]:
    """POST /gradio_api/queue/join with `data` exactly as given (no upload by the client), then read
    the event stream until the job completes. For payloads gradio_client would rewrite."""
    session = uuid.uuid4().hex
    body = {
        "data": data,
        "fn_index": api.dependency(endpoint)["id"],
        "session_hash": session,
        "event_data": None,
        "trigger_id": None,
    }
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=httpx.Timeout(timeout)) as http:
        answer = http.post(f"{server.url}/gradio_api/queue/join", json=body)
        if answer.status_code != 200:
            return False, f"HTTP {answer.status_code}: {answer.text}"
        stream_url = f"{server.url}/gradio_api/queue/data"
        with http.stream("GET", stream_url, params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if time.monotonic() > deadline:
                    break
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    output = message.get("output") or {}
                    if message.get("success"):
                        return True, output.get("data")
                    return False, output.get("error") or json.dumps(output)
    return False, f"no answer within {timeout:.0f} s"


def photo(folder: Path) -> Path:
    """A 512x512 photo (scikit-image's astronaut), or a synthetic one without scikit-image."""
    path = folder / "photo.png"
    try:
        from skimage import data

        Image.fromarray(data.astronaut()).save(path)
    except ImportError:
        image = Image.radial_gradient("L").resize((512, 512)).convert("RGB")
        ImageDraw.Draw(image).rectangle((128, 128, 384, 384), outline="white", width=8)
        image.save(path)
    return path


def data_url(path: Path) -> dict[str, Any]:
    """An image as a `data:` URL in a FileData dict: gradio_client sends it as is (no upload)."""
    encoded = base64.b64encode(path.read_bytes()).decode()
    return {"url": f"data:image/png;base64,{encoded}", "meta": {"_type": "gradio.FileData"}}


# --------------------------------------------------------------------------- soak


def soak(args: argparse.Namespace, server: Server, client: Client) -> None:
    """Sequential /canny, /canny_map, /canny_compare requests; RSS and files every N requests."""
    api = Api(client)
    pixels = Image.open(photo(server.scratch)).convert("RGB")
    cycle = ["/canny", "/canny_map", "/canny_compare"]
    samples: dict[int, tuple[float, int]] = {}
    errors: list[str] = []
    latencies: list[float] = []
    headers = ["requests", "rss_MB", *DISK_HEADERS, "s/req", "errors"]
    print("  ".join(f"{h:>13}" for h in headers))

    def sample(done: int) -> None:
        usage = server.disk()
        rss = server.rss_mb()
        samples[done] = (rss, sum(count for count, _ in usage.values()))
        mean = f"{statistics.mean(latencies[-args.every :]):.2f}" if latencies else "-"
        row = [done, f"{rss:.0f}", *disk_cells(usage), mean, len(errors)]
        print("  ".join(f"{cell!s:>13}" for cell in row), flush=True)

    sample(0)
    deadline = time.monotonic() + args.max_seconds
    done = 0
    while done < args.requests and time.monotonic() < deadline and server.alive():
        endpoint = cycle[done % len(cycle)]
        # Every request is another user's photo and seed: gradio stores files by content hash,
        # so repeating one image and seed would hide the growth.
        image = photo_variant(pixels, done, server.scratch)
        overrides = {**SMALL, "seed": done} if endpoint != "/canny_map" else {"resolution": 64}
        call_args = api.args(endpoint, handle_file(str(image)), **overrides)
        ok, result, seconds = call(client, endpoint, call_args, args.timeout)
        done += 1
        latencies.append(seconds)
        if not ok:
            errors.append(f"#{done} {endpoint}: {short(result)}")
        if done % args.every == 0 or done == args.requests:
            sample(done)
    if done < args.requests:
        print(f"stopped after {done} requests (time limit {args.max_seconds:.0f} s or server gone)")
    for line in errors[:5]:
        print("error", line)
    report_growth(samples, args.warmup)


def photo_variant(pixels: Image.Image, number: int, folder: Path) -> Path:
    """The photo with two pixels set from `number`: same look, another file (and hash)."""
    image = pixels.copy()
    image.putpixel((0, 0), (number % 256, number // 256 % 256, 0))
    path = folder / "soak_input.png"
    image.save(path)
    return path


def report_growth(samples: dict[int, tuple[float, int]], warmup: int) -> None:
    start = min((n for n in samples if n >= warmup), default=None)
    last = max(samples)
    if start is None or start == last:
        print(f"growth after warm-up: not enough requests (need more than {warmup})")
        return
    (rss0, files0), (rss1, files1) = samples[start], samples[last]
    per_100 = (files1 - files0) / (last - start) * 100
    print(
        f"growth after warm-up (request {start} -> {last}): RSS {rss0:.0f} -> {rss1:.0f} MB "
        f"({(rss1 - rss0) / rss0 * 100:+.1f} %), files {files0} -> {files1} "
        f"({files1 - files0:+d}, {per_100:.0f} per 100 requests)"
    )


# --------------------------------------------------------------------------- cancel


def cancel(args: argparse.Namespace, server: Server, client: Client) -> None:
    """Cancel a long /canny job once it runs; watch the server's CPU and RSS afterwards."""
    api = Api(client)
    image = photo(server.scratch)
    resolution = api.slider_maximum("/canny", "resolution", 768)
    steps = min(50, api.slider_maximum("/canny", "steps", 50))
    print(f"long job: /canny {resolution}x{resolution}, {steps} steps, 1 image")
    before = small_request_seconds(api, image, args.timeout)
    print(
        f"small request before any cancel: {format_seconds(before)} (median of 3, after a warm-up)"
    )
    summary = []
    for round_number in range(1, args.rounds + 1):
        long_args = api.args(
            "/canny",
            handle_file(str(image)),
            resolution=resolution,
            steps=steps,
            num_images=1,
            randomize_seed=False,
        )
        job = client.submit(*long_args, api_name="/canny")
        waited = wait_until_running(job, args.timeout)
        if waited is None:
            print(f"round {round_number}: the job never started running; cancelling anyway")
        time.sleep(args.cancel_after)
        progress = progress_text(job)
        job.cancel()
        print(
            f"\nround {round_number}: running after {format_seconds(waited)}, cancelled "
            f"{args.cancel_after:.0f} s later at {progress}; CPU of the server (100 % = one core):"
        )
        windows = watch_cpu(server, args.watch_seconds, args.interval)
        table(
            ["t_s", "cpu_%", "rss_MB", "threads"],
            [[f"{t:.1f}", f"{cpu:.0f}", f"{rss:.0f}", threads] for t, cpu, rss, threads in windows],
        )
        idle = next((t for t, cpu, _, _ in windows if cpu < 10), None)
        stayed = idle is not None and all(cpu < 10 for t, cpu, _, _ in windows if t >= idle)
        verdict = (
            f"CPU < 10 % after {idle:.1f} s" + ("" if stayed else " (but rose again)")
            if idle is not None
            else f"CPU never < 10 % within {args.watch_seconds:.0f} s"
        )
        print(f"round {round_number}: {verdict}; job status {job.status().code.name}")
        summary.append(
            [round_number, verdict, f"{windows[-1][2]:.0f}" if windows else "-", server.threads()]
        )
    after = small_request_seconds(api, image, args.timeout)
    print()
    table(["round", "after cancel", "rss_MB_end", "threads"], summary)
    ratio = f" ({after / before:.1f}x)" if before and after else ""
    print(
        f"small request (64 px, 2 steps): before {format_seconds(before)}, "
        f"after {args.rounds} cancels {format_seconds(after)}{ratio}"
    )


def small_request_seconds(api: Api, image: Path, timeout: float) -> float | None:
    """Median seconds of 3 small /canny requests, after one warm-up request."""
    times = []
    for _ in range(4):
        ok, result, seconds = call(
            api.client, "/canny", api.args("/canny", handle_file(str(image)), **SMALL), timeout
        )
        if not ok:
            print(f"small request failed: {short(result)}")
            return None
        times.append(seconds)
    return statistics.median(times[1:])


def wait_until_running(job: Any, timeout: float) -> float | None:
    began = time.monotonic()
    while time.monotonic() - began < timeout and not job.done():
        if job.status().code in RUNNING:
            return time.monotonic() - began
        time.sleep(0.05)
    return None


def progress_text(job: Any) -> str:
    data = job.status().progress_data
    if data:
        unit = data[-1]
        if unit.index is not None and unit.length:
            return f"step {unit.index}/{unit.length}"
    return "no progress reported"


def watch_cpu(
    server: Server, seconds: float, interval: float
) -> list[tuple[float, float, float, int]]:
    """(end of window s, CPU % of one core, RSS MB, threads) per 1-second window, sampling every
    `interval` s for `seconds` s."""
    samples = []
    began = time.monotonic()
    while time.monotonic() - began <= seconds + interval / 2 and server.alive():
        now = time.monotonic() - began
        samples.append((now, server.cpu_seconds(), server.rss_mb(), server.threads()))
        time.sleep(max(0.0, began + len(samples) * interval - time.monotonic()))
    step = max(1, round(1 / interval))
    windows = []
    for index in range(step, len(samples), step):
        (t0, cpu0, _, _), (t1, cpu1, rss, threads) = samples[index - step], samples[index]
        windows.append((t1, (cpu1 - cpu0) / (t1 - t0) * 100, rss, threads))
    return windows


def format_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


# --------------------------------------------------------------------------- burst


class RssWatch:
    """Samples the server's RSS every `interval` s in a thread; kills the server past `limit_mb`
    (the machine is shared: a runaway decode must not take it down)."""

    def __init__(self, server: Server, interval: float, limit_mb: float):
        self.server, self.interval, self.limit_mb = server, interval, limit_mb
        self.peak = 0.0
        self.tripped = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set() and self.server.alive():
            rss = self.server.rss_mb()
            self.peak = max(self.peak, rss)
            if rss > self.limit_mb and not self.tripped:
                self.tripped = True
                print(f"!! server RSS {rss:.0f} MB > guard {self.limit_mb:.0f} MB: SIGKILL")
                os.kill(self.server.pid, signal.SIGKILL)
            self._stop.wait(self.interval)


def huge_png(folder: Path, side: int) -> Path:
    """A side x side 1-bit PNG, white with a black square: tiny on disk, side² pixels decoded."""
    path = folder / f"huge_{side}.png"
    image = Image.new("1", (side, side), 1)
    ImageDraw.Draw(image).rectangle((side // 3, side // 3, 2 * side // 3, 2 * side // 3), fill=0)
    image.save(path, optimize=True)
    del image
    return path


def rss_guard_mb(requested: float | None) -> float:
    if requested:
        return requested
    available = re.search(r"^MemAvailable:\s*(\d+)", Path("/proc/meminfo").read_text(), re.M)
    available_mb = int(available.group(1)) / 1024 if available else 8000
    return min(12000.0, 0.6 * available_mb)


def burst(args: argparse.Namespace, server: Server, client: Client) -> None:
    """N clients preview a huge 1-bit PNG at once (plus one normal photo); peak RSS; data: URLs."""
    api = Api(client)
    normal = photo(server.scratch)
    huge = huge_png(server.scratch, args.side)
    print(
        f"huge image: {args.side}x{args.side} mode 1, {huge.stat().st_size / 1e3:.1f} KB on disk; "
        f"normal photo: 512x512, {normal.stat().st_size / 1e3:.0f} KB"
    )
    limit = rss_guard_mb(args.rss_guard_mb)
    ok, result, seconds = call(
        client, "/canny_map", map_args(api, "/canny_map", normal), args.timeout
    )
    print(f"warm-up /canny_map with the photo: {'ok' if ok else short(result)} in {seconds:.2f} s")
    rss_before = server.rss_mb()
    print(f"RSS before the burst: {rss_before:.0f} MB (guard {limit:.0f} MB)\n")

    jobs = [("/canny_map" if i % 2 == 0 else "/scribble_map", huge) for i in range(args.clients)]
    jobs.append(("/canny_map", normal))  # an ordinary user during the burst
    clients = [Client(server.url, verbose=False, download_files=False) for _ in jobs]
    outcomes: list[list[Any]] = [[] for _ in jobs]
    barrier = threading.Barrier(len(jobs))

    def one(index: int) -> None:
        endpoint, path = jobs[index]
        barrier.wait(timeout=60)
        ok, result, seconds = call(
            clients[index], endpoint, map_args(api, endpoint, path), args.timeout
        )
        outcomes[index] = [index, endpoint, path.stem, f"{seconds:.1f}", outcome(ok, result)]

    began = time.monotonic()
    with RssWatch(server, 0.1, limit) as watch:
        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(jobs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=max(1.0, args.timeout + 60 - (time.monotonic() - began)))
    wall = time.monotonic() - began
    for instance in clients:
        instance.close()
    table(["#", "endpoint", "image", "s", "outcome"], [row for row in outcomes if row])
    rss_now = server.rss_mb()
    time.sleep(5)
    print(
        f"\nburst of {args.clients} huge + 1 normal: {wall:.1f} s; RSS before {rss_before:.0f} MB, "
        f"peak {watch.peak:.0f} MB ({watch.peak - rss_before:+.0f}), right after {rss_now:.0f} MB, "
        f"5 s later {server.rss_mb():.0f} MB"
        + (" — GUARD TRIPPED, server killed" if watch.tripped else "")
    )
    if server.alive():
        data_url_requests(args, server, api, normal, huge, limit)


def data_url_requests(
    args: argparse.Namespace, server: Server, api: Api, normal: Path, huge: Path, limit: float
) -> None:
    """The same images as `data:` URLs: gradio decodes them itself, with no upload route."""
    print("\ndata: URL instead of an uploaded file (/canny_map):")
    rows = []
    for path in (normal, huge):
        rss_before = server.rss_mb()
        with RssWatch(server, 0.1, limit) as watch:
            ok, result, seconds = call(
                api.client, "/canny_map", map_args(api, "/canny_map", path, data_url), args.timeout
            )
        rows.append(
            [
                path.stem,
                f"{seconds:.1f}",
                f"{rss_before:.0f}",
                f"{watch.peak:.0f}",
                outcome(ok, result),
            ]
        )
        if watch.tripped or not server.alive():
            break
    table(["image", "s", "rss_before_MB", "peak_MB", "outcome"], rows)


def map_args(
    api: Api, endpoint: str, path: Path, wrap: Callable[[Path], Any] | None = None
) -> list[Any]:
    image = wrap(path) if wrap else handle_file(str(path))
    return api.args(endpoint, image, resolution=64)


def outcome(ok: bool, result: Any) -> str:
    return "ok" if ok else "error: " + short(result)


# --------------------------------------------------------------------------- errors


def errors(args: argparse.Namespace, server: Server, client: Client) -> None:
    """Hostile inputs; what the error text shown to the user looks like."""
    api = Api(client)
    image = photo(server.scratch)

    def generate(endpoint: str, **overrides: Any) -> tuple[bool, Any]:
        call_args = api.args(endpoint, handle_file(str(image)), **{**SMALL, **overrides})
        ok, result, _ = call(client, endpoint, call_args, args.timeout)
        return ok, result

    ok, result = generate("/canny")
    recipe_path = server.scratch / "recipe_20000_controls.json"
    if ok:
        recipe = dict(result[1])
        recipe["extra_controls"] = [{"modality": "canny", "preprocessor": "canny"}] * 20000
        recipe_path.write_text(json.dumps(recipe))
    cases: list[tuple[str, Callable[[], tuple[bool, Any]]]] = [
        ("scheduler = <a href=…>", lambda: generate("/canny", scheduler=HOSTILE_LINK)),
        ("sweep values <img src=x>", lambda: generate("/canny_sweep", sweep_values="<img src=x>")),
        ("20,000-char prompt", lambda: generate("/canny", prompt=long_prompt(20000))),
        (
            "recipe, 20,000 extra_controls",
            lambda: (
                call_recipe(client, api, recipe_path, args.timeout)
                if recipe_path.exists()
                else (False, "(no base recipe: the first generation failed)")
            ),
        ),
        (
            "image path 'app.py' (raw)",
            lambda: raw_call(
                server,
                api,
                "/canny_map",
                api.args("/canny_map", {"path": "app.py", "meta": {"_type": "gradio.FileData"}}),
                args.timeout,
            ),
        ),
    ]
    fragments = {
        "app folder": str(server.app_dir.resolve()),
        "/tmp/": "/tmp/",
        "run folder": str(server.run_dir),
        "site-packages": "site-packages",
        "home": str(Path.home()) + "/",
    }
    rows = []
    for label, run in cases:
        ok, result = run()
        text = "" if ok else str(result)
        leaks = [name for name, fragment in fragments.items() if fragment in text]
        address = bool(re.search(r"0x[0-9a-fA-F]{6,}", text))
        rows.append(
            [
                label,
                "ok" if ok else "error",
                len(text),
                "yes" if "<" in text else "no",
                ", ".join(leaks) or "no",
                "yes" if address else "no",
                short(text, 100) if not ok else "(no error)",
            ]
        )
    table(["input", "result", "msg_len", "raw_<", "leaks_path", "0x_addr", "message"], rows)


def long_prompt(length: int) -> str:
    words = "a stone bird statue in a garden, best quality, "
    return (words * (length // len(words) + 1))[:length]


def call_recipe(client: Client, api: Api, path: Path, timeout: float) -> tuple[bool, Any]:
    ok, result, _ = call(
        client,
        "/canny_load_recipe",
        api.args("/canny_load_recipe", handle_file(str(path))),
        timeout,
    )
    return ok, result


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> int:
    print(cpu_summary())
    extra_env = dict(item.split("=", 1) for item in args.env)
    server = Server(
        app_dir=Path(args.app_dir).resolve(),
        server_args=list(args.server_arg),
        extra_env=extra_env,
        system_tmp=args.system_tmp,
        startup_timeout=args.startup_timeout,
    )
    client = None
    began = time.monotonic()
    try:
        server.start()
        client = Client(server.url, verbose=False, download_files=False)
        args.scenario(args, server, client)
        return 0
    except RuntimeError as error:
        print(f"error: {error}")
        return 2
    finally:
        if client is not None:
            client.close()
        rows = [["before stop", *disk_cells(server.disk())]] if server.alive() else []
        print(f"\nserver {server.stop()}; log: {server.log_summary()}")
        if server.process is not None and server.process.returncode not in (0, None):
            print("last lines of the server log:\n" + server.log_tail(3))
        left = server.disk()
        table(["", *DISK_HEADERS], [*rows, ["after stop", *disk_cells(left)]])
        print(f"files left after shutdown: {sum(count for count, _ in left.values())}")
        print(f"total {time.monotonic() - began:.0f} s")
        if args.keep:
            print(f"kept {server.run_dir}")
        else:
            shutil.rmtree(server.run_dir, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--app-dir", default=str(REPO), help="checkout whose app.py is served")
    common.add_argument("--server-arg", action="append", default=[], metavar="ARG")
    common.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    common.add_argument("--system-tmp", action="store_true", help="do not give the server a TMPDIR")
    common.add_argument("--keep", action="store_true", help="keep the run folder and server log")
    common.add_argument("--startup-timeout", type=float, default=180.0)
    common.add_argument("--timeout", type=float, default=180.0, help="seconds per request")

    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("soak", parents=[common], help=soak.__doc__)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--every", type=int, default=20, help="print figures every N requests")
    p.add_argument("--warmup", type=int, default=40, help="growth is measured from this request")
    p.add_argument("--max-seconds", type=float, default=900.0, help="stop the loop after this")
    p.set_defaults(scenario=soak)

    p = sub.add_parser("cancel", parents=[common], help=cancel.__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--cancel-after", type=float, default=2.0, help="seconds of running before cancel"
    )
    p.add_argument("--watch-seconds", type=float, default=20.0)
    p.add_argument("--interval", type=float, default=0.5, help="CPU sampling interval (s)")
    p.set_defaults(scenario=cancel)

    p = sub.add_parser("burst", parents=[common], help=burst.__doc__)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--side", type=int, default=13000, help="side of the huge 1-bit PNG")
    p.add_argument(
        "--rss-guard-mb",
        type=float,
        default=None,
        help="SIGKILL the server above this RSS (default: 60 %% of MemAvailable, at most 12000)",
    )
    p.set_defaults(scenario=burst)

    p = sub.add_parser("errors", parents=[common], help=errors.__doc__)
    p.set_defaults(scenario=errors)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for item in args.env:
        if "=" not in item:
            raise SystemExit(f"--env expects KEY=VALUE, got {item!r}")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
