"""ray-put-get: Ray's shared-memory object store, as BASELINES' ray-put+get.

The server child starts a one-node Ray cluster (so its raylet, object store and the echo
actor's worker run on the server CPU) and a named echo actor. The client joins with
`ray.init(address=...)`. A round trip: `ray.put` in the client, the actor gets the array
(a read-only view on the store) and returns it (Ray puts it back), the client `ray.get`s
it. Needs the `bench` extra: pip install 'arrowmesh[bench]'.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any, Final, cast

import ray  # type: ignore[import-not-found, import-untyped, unused-ignore]  # the bench extra

from ._base import Payload, Ready, ServerArgs, time_each, write_ready

_NAMESPACE: Final = "arrowmesh-bench"
_ACTOR: Final = "echo"


class _Echo:
    def echo(self, array: Any) -> Any:
        return array


_EchoActor: Final[Any] = ray.remote(num_cpus=0)(_Echo)  # no CPU reserved: it only waits


def serve(args: ServerArgs) -> None:
    """Start Ray and the named echo actor; serve until SIGTERM, then shut Ray down."""
    # Ray's own temp dir (/tmp/ray): a session path under the run directory can push its
    # Unix socket paths past the 107-byte limit.
    # A one-node cluster on this machine for the length of a benchmark: Ray 2.5x turns on
    # token auth for local clusters, and its driver in another process did not pick the
    # token up (InvalidAuthToken), so the bench's cluster runs without it.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(
        namespace=_NAMESPACE,
        include_dashboard=False,
        logging_level=logging.WARNING,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())  # ray.init replaced it
    try:
        actor = _EchoActor.options(name=_ACTOR).remote()
        ray.get(actor.echo.remote(0))  # started and answering
        write_ready(args.ready_file, {"address": ray.get_runtime_context().gcs_address})
        stop.wait()
    finally:
        ray.shutdown()


class RayClient:
    """A Ray driver joined to the server's cluster, calling its echo actor."""

    def __init__(self, ready: Ready) -> None:
        os.environ["RAY_AUTH_MODE"] = "disabled"  # as the server's cluster (see serve)
        ray.init(
            address=ready["address"],
            namespace=_NAMESPACE,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
        self._actor = ray.get_actor(_ACTOR, namespace=_NAMESPACE)

    def echo(self, payload: Payload) -> Payload:
        """One round trip; the result is a read-only view on the object store."""
        return cast(Payload, ray.get(self._actor.echo.remote(ray.put(payload))))

    def round_trips(self, payload: Payload, reps: int) -> list[int]:
        """Time `reps` round trips, in nanoseconds each."""
        return time_each(self.echo, payload, reps)

    def close(self) -> None:
        """Leave the cluster (the server child shuts it down)."""
        ray.shutdown()
