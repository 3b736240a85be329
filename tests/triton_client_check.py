"""Drives a live torchwatch with NVIDIA's own client library, tritonclient[http].

    python tests/triton_client_check.py HOST:PORT MODELS_DIR

Over HTTPS when TRITON_TLS_CA names the CA to trust (with TRITON_TLS_CERT and TRITON_TLS_KEY as
the client certificate, when set), with basic auth when TRITON_BASIC_AUTH is `user:password`; the
environment keeps the password off the command line.

For each demo model: liveness, readiness, server and model metadata, model readiness, then `infer`
with JSON tensors and with binary tensors (request and response), compared with PyTorch's outputs
in MODELS_DIR/<model>.reference.json. Prints one line per check; exits non-zero on the first
failure with what was expected and what came back.
"""

import json
import os
import pathlib
import sys

import numpy as np
import tritonclient.http as httpclient

TOLERANCE = 1e-5


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def main() -> None:
    url, models_dir = sys.argv[1], pathlib.Path(sys.argv[2])
    tls = {}
    if os.environ.get("TRITON_TLS_CA"):
        tls = {"ssl": True, "ssl_options": {"ca_certs": os.environ["TRITON_TLS_CA"]}}
        if os.environ.get("TRITON_TLS_CERT"):
            tls["ssl_options"]["certfile"] = os.environ["TRITON_TLS_CERT"]
            tls["ssl_options"]["keyfile"] = os.environ["TRITON_TLS_KEY"]
    client = httpclient.InferenceServerClient(url=url, **tls)
    if os.environ.get("TRITON_BASIC_AUTH"):
        from tritonclient.http.auth import BasicAuth

        user, password = os.environ["TRITON_BASIC_AUTH"].split(":", 1)
        client.register_plugin(BasicAuth(user, password))
    check(client.is_server_live(), "is_server_live")
    check(client.is_server_ready(), "is_server_ready")
    server = client.get_server_metadata()
    check(server["name"] == "torchwatch" and "binary_tensor_data" in server["extensions"],
          f"get_server_metadata: {server}")

    for model in ("mlp", "cnn"):
        check(client.is_model_ready(model), f"{model}: is_model_ready")
        metadata = client.get_model_metadata(model)
        check(metadata["platform"] == "pytorch_torchscript"
              and metadata["inputs"][0]["shape"][0] == -1
              and metadata["outputs"][0]["datatype"] == "FP32",
              f"{model}: get_model_metadata {metadata}")
        config = client.get_model_config(model)
        check(config["max_batch_size"] > 0, f"{model}: get_model_config max_batch_size")
        reference = json.loads((models_dir / f"{model}.reference.json").read_text())
        for case in reference["cases"]:
            x = np.array(case["input"]["data"], dtype=np.float32).reshape(case["input"]["shape"])
            want = np.array(case["output"]["data"], dtype=np.float32).reshape(case["output"]["shape"])
            for binary in (False, True):
                tensor = httpclient.InferInput("input__0", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x, binary_data=binary)
                outputs = [httpclient.InferRequestedOutput("output__0", binary_data=binary)]
                result = client.infer(model, [tensor], outputs=outputs, request_id=f"tc-{binary}")
                got = result.as_numpy("output__0")
                error = float(np.max(np.abs(got - want)))
                check(got.shape == want.shape and error <= TOLERANCE,
                      f"{model}: infer batch {x.shape[0]} {'binary' if binary else 'JSON'}: "
                      f"shape {got.shape}, max |torchwatch - pytorch| = {error:.2e}")
                check(result.get_response()["id"] == f"tc-{binary}", f"{model}: request id echoed")
        # No outputs list: tritonclient asks for every output in binary.
        result = client.infer(model, [tensor])
        check(result.as_numpy("output__0") is not None, f"{model}: infer without an outputs list")


if __name__ == "__main__":
    main()
