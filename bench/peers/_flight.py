"""flight: Arrow Flight, DoPut of a one-column record batch, then DoGet of it back.

The server keeps the last table put. The batch wraps the numpy payload without a copy
(`pa.array` of a contiguous uint8 array), and the reply column converts back with
`to_numpy()`, zero-copy when it arrives as one chunk.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa
import pyarrow.flight as flight

from ._base import Payload, Ready, ServerArgs, time_each, write_ready

_SCHEMA: Final = pa.schema([("x", pa.uint8())])
_PATH: Final = "echo"


class _EchoServer(flight.FlightServerBase):  # type: ignore[misc]  # pyarrow has no stubs
    def __init__(self, location: str) -> None:
        super().__init__(location)
        self._table: pa.Table | None = None

    def do_put(
        self,
        context: flight.ServerCallContext,
        descriptor: flight.FlightDescriptor,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.FlightMetadataWriter,
    ) -> None:
        self._table = reader.read_all()

    def do_get(self, context: flight.ServerCallContext, ticket: flight.Ticket) -> object:
        if self._table is None:
            raise flight.FlightServerError("nothing was put yet")
        return flight.RecordBatchStream(self._table)


def serve(args: ServerArgs) -> None:
    """Serve DoPut/DoGet on 127.0.0.1 until killed."""
    server = _EchoServer("grpc://127.0.0.1:0")
    write_ready(args.ready_file, {"address": f"127.0.0.1:{server.port}"})
    server.serve()


class FlightEchoClient:
    """A FlightClient reused for every DoPut + DoGet pair."""

    def __init__(self, ready: Ready) -> None:
        self._client = flight.FlightClient(f"grpc://{ready['address']}")
        self._descriptor = flight.FlightDescriptor.for_path(_PATH)
        self._ticket = flight.Ticket(_PATH.encode())

    def echo(self, payload: Payload) -> Payload:
        """One round trip: DoPut the payload, DoGet it back, the column as a numpy array."""
        batch = pa.record_batch([pa.array(payload)], schema=_SCHEMA)
        writer, _ = self._client.do_put(self._descriptor, _SCHEMA)
        writer.write_batch(batch)
        writer.close()
        table = self._client.do_get(self._ticket).read_all()
        out: Payload = table.column(0).to_numpy()
        return out

    def round_trips(self, payload: Payload, reps: int) -> list[int]:
        """Time `reps` round trips, in nanoseconds each."""
        return time_each(self.echo, payload, reps)

    def close(self) -> None:
        """Close the client."""
        self._client.close()
