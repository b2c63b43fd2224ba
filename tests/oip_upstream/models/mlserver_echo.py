"""An MLServer custom runtime, `mlserver_echo.Echo`: each input `x` comes back as `out_x`.

MLServer has no binary tensor extension, so its HTTP side reads and writes JSON only. An
input `delay_s` makes the model sleep that long first; an input of rank above 2 is refused
with MLServer's own error (HTTP 400, gRPC INVALID_ARGUMENT). The data goes back as it came
(no codec): MLServer's NumpyCodec adds a batch dimension to 1-d outputs.
"""

from __future__ import annotations

import asyncio

from mlserver import MLModel
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class Echo(MLModel):  # type: ignore[misc]  # mlserver is installed only in the server's venv
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        outputs = []
        for tensor in payload.inputs:
            if len(tensor.shape) > 2:
                raise MLServerError(
                    f"input {tensor.name!r} has rank {len(tensor.shape)}, this model takes"
                    " at most 2",
                    400,
                )
            if tensor.name == "delay_s":
                await asyncio.sleep(float(tensor.data.root[0]))
            outputs.append(
                ResponseOutput(
                    name=f"out_{tensor.name}",
                    shape=tensor.shape,
                    datatype=tensor.datatype,
                    data=tensor.data,
                )
            )
        return InferenceResponse(model_name=self.name, outputs=outputs)
