"""A Triton Inference Server (the binary nvidia-pytriton ships) serving `echo` on the CPU.

Run by the PyTriton venv's interpreter: `python triton_echo.py --http-port P --grpc-port Q
--workspace DIR`. Each input `x` comes back as `out_x`; an input `delay_s` makes the model
sleep that long first. Every input is optional and 2-d of any size, so a 3-d one is a bad
shape Triton itself refuses. Shared-memory and statistics endpoints are left open (PyTriton
protects them with a token by default) so standard clients can use them.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import numpy as np
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

DTYPES: dict[str, Any] = {
    "bool": np.bool_,
    "i8": np.int8,
    "i16": np.int16,
    "i32": np.int32,
    "i64": np.int64,
    "u8": np.uint8,
    "u16": np.uint16,
    "u32": np.uint32,
    "u64": np.uint64,
    "f16": np.float16,
    "f32": np.float32,
    "f64": np.float64,
    "bytes": np.bytes_,
}


def echo(requests: list[Any]) -> list[dict[str, Any]]:
    replies = []
    for request in requests:
        delay = request.data.get("delay_s")
        if delay is not None:
            time.sleep(float(delay.ravel()[0]))
        replies.append({f"out_{name}": array for name, array in request.items()})
    return replies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--workspace", type=Path, required=True)
    args = parser.parse_args()
    # The Python backend stub embeds libpython: without this it loads the system's
    # libpython3.x (another patch release than this interpreter's stdlib) and fails in
    # `multiprocessing` ("'_thread.RLock' object has no attribute '_recursion_count'").
    libdir = str(sysconfig.get_config_var("LIBDIR"))
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(
        filter(None, [libdir, os.environ.get("LD_LIBRARY_PATH")])
    )
    # SIGTERM ends the process through the `with` below, which stops tritonserver too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        allow_metrics=False,
        exit_timeout_secs=0,  # a test server: stop at once (2 s per stop otherwise)
    )
    security = TritonSecurityConfig(restricted_endpoints=[])
    inputs = [Tensor(name=n, dtype=d, shape=(-1, -1), optional=True) for n, d in DTYPES.items()]
    inputs.append(Tensor(name="delay_s", dtype=np.float32, shape=(1,), optional=True))
    outputs = [Tensor(name=f"out_{n}", dtype=d, shape=(-1, -1)) for n, d in DTYPES.items()]
    outputs.append(Tensor(name="out_delay_s", dtype=np.float32, shape=(1,)))
    with Triton(config=config, workspace=args.workspace, security_config=security) as triton:
        triton.bind(
            model_name="echo",
            infer_func=echo,
            inputs=inputs,
            outputs=outputs,
            config=ModelConfig(batching=False),
        )
        triton.serve()


if __name__ == "__main__":
    main()
