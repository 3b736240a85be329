"""What bench/run and bench/soak share: the release binary, the demo models' inputs, a free
port, readiness, per-process CPU and the results folder. Standard library only."""

import datetime
import json
import os
import pathlib
import socket
import struct
import subprocess
import sys
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
BINARY = TARGET / "release" / "torchwatch"
RESULTS = ROOT / "bench" / "results"
# Each demo model's input shape without the batch dimension.
MODELS = {"mlp": [784], "cnn": [3, 64, 64]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reference_input(model: str) -> dict:
    """The first reference case's input tensor (name, datatype, shape [1, ...], flat data)."""
    reference = json.loads((ROOT / "models" / f"{model}.reference.json").read_text())
    return reference["cases"][0]["input"]


def binary_request(case: dict) -> tuple:
    """Triton's binary tensor form of an FP32 input: (JSON header, raw little-endian bytes)."""
    raw = struct.pack(f"<{len(case['data'])}f", *case["data"])
    header = json.dumps({"inputs": [{"name": case["name"], "shape": case["shape"], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return header, raw


def process_cpu(pid: int) -> float:
    """User plus system CPU seconds the process has used."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(base: str, server: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"torchwatch exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"torchwatch did not become ready in {timeout:.0f} s")


def write_result(data: dict, prefix: str = "") -> pathlib.Path:
    """Writes bench/results/PREFIXyyyymmddThhmmssZ.json (ignored by git) and returns its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{prefix}{stamp}.json"
    path.write_text(json.dumps(data, indent=1))
    return path
