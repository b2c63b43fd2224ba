"""grpc-unary and grpc-stream-1MiB: grpcio with raw bytes messages (no protobuf).

Used as a competent user would: message size limits lifted, one channel and one
multicallable reused for every call. grpcio accepts only `bytes` messages, so the client
pays `tobytes()` on the way out; replies are wrapped with `np.frombuffer` (unary) or
reassembled into a pre-faulted reused buffer (stream). The stream server collects the
whole request before echoing it, as every other server here has the whole tensor before
it replies.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent import futures
from typing import Final

import grpc
import numpy as np

from bench._errors import EchoMismatch
from bench._memory import ReusedBuffer
from bench._units import MiB

from ._base import Payload, Ready, ServerArgs, time_each, write_ready

CHUNK: Final = 1 * MiB
_SERVICE: Final = "bench.Echo"
_OPTIONS: Final = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


def _unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


def _stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    chunks = list(requests)
    yield from chunks


def serve(args: ServerArgs) -> None:
    """Serve /bench.Echo/Unary and /bench.Echo/Stream until killed."""
    handler = grpc.method_handlers_generic_handler(
        _SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "Stream": grpc.stream_stream_rpc_method_handler(_stream),
        },
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), handlers=[handler], options=_OPTIONS
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    write_ready(args.ready_file, {"address": f"127.0.0.1:{port}"})
    server.wait_for_termination()


class UnaryClient:
    """One unary call per round trip."""

    def __init__(self, ready: Ready) -> None:
        self._channel = grpc.insecure_channel(ready["address"], options=_OPTIONS)
        self._call = self._channel.unary_unary(f"/{_SERVICE}/Unary")

    def echo(self, payload: Payload) -> Payload:
        """One round trip; the result is a read-only view on the reply bytes."""
        reply: bytes = self._call(payload.tobytes())
        return np.frombuffer(reply, dtype=np.uint8)

    def round_trips(self, payload: Payload, reps: int) -> list[int]:
        """Time `reps` round trips, in nanoseconds each."""
        return time_each(self.echo, payload, reps)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()


class StreamClient:
    """One bidirectional stream per round trip, the payload cut in 1 MiB chunks both ways."""

    def __init__(self, ready: Ready) -> None:
        self._channel = grpc.insecure_channel(ready["address"], options=_OPTIONS)
        self._call = self._channel.stream_stream(f"/{_SERVICE}/Stream")
        self._buffer = ReusedBuffer()

    def echo(self, payload: Payload) -> Payload:
        """One round trip; the result is a view on the reused reassembly buffer."""
        nbytes = payload.nbytes
        out = self._buffer.view(nbytes)
        got = 0
        for chunk in self._call(_chunks(payload.data)):
            end = got + len(chunk)
            if end > nbytes:
                raise EchoMismatch(f"grpc stream sent more than the {nbytes} bytes it got")
            out[got:end] = chunk
            got = end
        return np.frombuffer(out[:got], dtype=np.uint8)

    def round_trips(self, payload: Payload, reps: int) -> list[int]:
        """Time `reps` round trips, in nanoseconds each."""
        return time_each(self.echo, payload, reps)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()


def _chunks(view: memoryview) -> Iterable[bytes]:
    for start in range(0, len(view), CHUNK):
        yield view[start : start + CHUNK].tobytes()
