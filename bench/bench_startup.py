"""Start-up: `python app.py` to the page answering, against a hello-world gradio app, in one run.

    python -m bench.bench_startup [--backends toy tiny] [--repeats 3]

Each case is a fresh process started the way a user starts it; the clock stops when the server's
page answers HTTP 200. Cases run interleaved, `--repeats` rounds, so background load hits them
alike; the figure is the median and the ratio is app ÷ hello world (issue 16: ≤ 1.3).
Also timed: `import gradio` alone, for scale.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HELLO_WORLD = """
import sys
import gradio as gr
with gr.Blocks() as demo:
    button = gr.Button("Hello")
    out = gr.Textbox()
    button.click(lambda: "world", None, out)
demo.launch(server_port=int(sys.argv[1]))
"""


def cpu_flags() -> str:
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    wanted = ("avx512_bf16", "amx_bf16", "avx512f", "avx2")
    return " ".join(flag for flag in wanted if flag in text.split())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def time_to_page(command: list[str], port: int, limit: float = 120.0) -> float:
    """Seconds from starting `command` until http://127.0.0.1:port/ answers 200."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while time.perf_counter() - started < limit:
            if process.poll() is not None:
                raise RuntimeError(f"{command} exited with {process.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{command} did not answer within {limit} s")
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def time_import_gradio() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import gradio"], check=True, cwd=ROOT)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["toy", "tiny"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print(f"cpu flags: {cpu_flags()}; {os.cpu_count()} cores")
    hello = ROOT / "bench" / ".hello_world_app.py"
    hello.write_text(HELLO_WORLD)
    times: dict[str, list[float]] = {"import gradio": [], "hello world": []}
    times.update({f"app.py --backend {b}": [] for b in args.backends})
    times["demos/canny.py --backend toy"] = []  # one tab alone
    try:
        for _ in range(args.repeats):
            times["import gradio"].append(time_import_gradio())
            port = free_port()
            times["hello world"].append(time_to_page([sys.executable, str(hello), str(port)], port))
            for backend in args.backends:
                port = free_port()
                command = [sys.executable, "app.py", "--backend", backend, "--port", str(port)]
                times[f"app.py --backend {backend}"].append(time_to_page(command, port))
            port = free_port()
            command = [sys.executable, "demos/canny.py", "--backend", "toy", "--port", str(port)]
            times["demos/canny.py --backend toy"].append(time_to_page(command, port))
    finally:
        hello.unlink(missing_ok=True)
    hello_median = statistics.median(times["hello world"])
    print("\n| case | median s | runs | ÷ hello world |\n| --- | ---: | --- | ---: |")
    for name, values in times.items():
        runs = ", ".join(f"{v:.2f}" for v in values)
        ratio = statistics.median(values) / hello_median
        print(f"| {name} | {statistics.median(values):.2f} | {runs} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
