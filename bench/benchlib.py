"""What bench/run and bench/soak share: the release binary, the demo models' inputs, a free
port, readiness, per-process CPU and the results folder. Standard library only."""

import datetime
import json
import os
import pathlib
import re
import resource
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


def rss_bytes(pid: int) -> int:
    """The process' resident set size now."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for process {pid}")


def wait_ready(base: str, server: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"{server.args[0]} exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"{server.args[0]} did not become ready in {timeout:.0f} s")


def write_result(data: dict, prefix: str = "") -> pathlib.Path:
    """Writes bench/results/PREFIXyyyymmddThhmmssZ.json (ignored by git) and returns its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{prefix}{stamp}.json"
    path.write_text(json.dumps(data, indent=1))
    return path


WRK_SCRIPT = """wrk.method = "POST"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
{headers}
"""


def wrk_scripts(model: str, workdir: pathlib.Path) -> dict:
    """wrk scripts that POST the model's first reference input, by encoding (json, binary)."""
    case = reference_input(model)
    json_body = workdir / f"{model}.json"
    json_body.write_text(json.dumps({"inputs": [case]}))
    header, raw = binary_request(case)
    binary_body = workdir / f"{model}.bin"
    binary_body.write_bytes(header + raw)
    scripts = {}
    for encoding, body, headers in [
        ("json", json_body, 'wrk.headers["Content-Type"] = "application/json"'),
        ("binary", binary_body, f'wrk.headers["Inference-Header-Content-Length"] = "{len(header)}"'),
    ]:
        script = workdir / f"{model}-{encoding}.lua"
        script.write_text(WRK_SCRIPT.format(body=body, headers=headers))
        scripts[encoding] = script
    return scripts


def seconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def run_wrk(url: str, script: pathlib.Path, connections: int, duration: float, server_pid: int) -> dict:
    """One wrk point (-t1, a connection per client): throughput, p50/p99, errors, the CPU wrk and
    the server used (cores, and the server's CPU seconds per request) and the server's peak RSS,
    sampled every 100 ms."""
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = process_cpu(server_pid)
    started = time.monotonic()
    wrk = subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_rss = rss_bytes(server_pid)
    while wrk.poll() is None:
        peak_rss = max(peak_rss, rss_bytes(server_pid))
        time.sleep(0.1)
    out, err = wrk.communicate()
    if wrk.returncode != 0:
        sys.exit(f"wrk failed ({wrk.returncode}): {err.strip()}")
    elapsed = time.monotonic() - started
    server_cpu = process_cpu(server_pid) - server_before
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (after_children.ru_utime - before_children.ru_utime) + (after_children.ru_stime - before_children.ru_stime)
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.M)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_s": seconds(latency["50"]),
        "p99_s": seconds(latency["99"]),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
        "wrk_cpu_cores": wrk_cpu / elapsed,
        "server_cpu_cores": server_cpu / elapsed,
        "server_cpu_per_request_s": server_cpu / max(requests, 1),
        "server_peak_rss_bytes": peak_rss,
    }
