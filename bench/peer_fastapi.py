"""The tutorial's stack, as a peer for bench/peers: a FastAPI app served by uvicorn that loads the
demo TorchScript models with PyTorch, answers KServe V2 JSON inference requests and exports
prometheus_client metrics, as the tutorial builds it. It logs one JSON line per request, as
torchwatch does at `info`, so neither side is measured without its logging.

    python bench/peer_fastapi.py --port PORT --model mlp=models/mlp.pt --model cnn=models/cnn.pt

Each model's forward pass runs with one intra-op thread, as torchwatch's demo configuration.
"""

import argparse
import json
import logging
import sys
import time
import uuid

import torch
import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

REQUESTS = Counter("inference_requests_total", "Inference requests", ["model", "status"])
LATENCY = Histogram("inference_request_duration_seconds", "Request latency", ["model"])
FORWARD = Histogram("inference_forward_duration_seconds", "Model forward pass", ["model"])
IN_FLIGHT = Gauge("inference_requests_in_flight", "Requests being handled", ["model"])

DTYPES = {"FP32": torch.float32, "FP64": torch.float64, "INT64": torch.int64, "INT32": torch.int32}

log = logging.getLogger("peer")


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"timestamp": self.formatTime(record), "level": record.levelname,
                           **record.__dict__.get("fields", {})})


def build(models: dict) -> FastAPI:
    app = FastAPI()

    @app.get("/v2/health/ready")
    def ready() -> dict:
        return {"ready": True}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> dict:
        started = time.perf_counter()
        request_id = request.headers.get("x-request-id") or str(uuid.uuid4())
        model = models.get(name)
        if model is None:
            raise HTTPException(404, f"unknown model '{name}'")
        status = 200
        IN_FLIGHT.labels(name).inc()
        try:
            body = await request.json()
            first = body["inputs"][0]
            x = torch.tensor(first["data"], dtype=DTYPES[first["datatype"]]).reshape(first["shape"])
            forward_started = time.perf_counter()
            with torch.inference_mode():
                y = model(x)
            FORWARD.labels(name).observe(time.perf_counter() - forward_started)
            return {"model_name": name, "model_version": "1", "id": body.get("id"),
                    "outputs": [{"name": "output__0", "datatype": "FP32", "shape": list(y.shape),
                                 "data": y.flatten().tolist()}]}
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
            status = 400
            raise HTTPException(400, str(error)) from error
        finally:
            elapsed = time.perf_counter() - started
            IN_FLIGHT.labels(name).dec()
            REQUESTS.labels(name, str(status)).inc()
            LATENCY.labels(name).observe(elapsed)
            log.info("response", extra={"fields": {
                "event": "response_sent", "request_id": request_id, "model": name,
                "status": status, "latency_ms": elapsed * 1e3}})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH of a TorchScript file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonLines())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    models = {}
    for spec in args.model:
        name, path = spec.split("=", 1)
        models[name] = torch.jit.load(path).eval()
    uvicorn.run(build(models), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
