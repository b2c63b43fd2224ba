"""What a replica (serve(), or the sidecar fronting an app) answers callers' pings with.

A PONG carries `{"healthy": bool, "load": [in progress, queue limit]}` ("load" only with a
queue limit, as on replies). Callers' active checks let an ejected endpoint back early only
when it says it is healthy, so the check reflects the app, not the link: an app that fails
every request while its link answers stays out (see discovery.AppHealth). Callers feed the
load to their balancers, as they do a reply's.
"""

from __future__ import annotations

import transport
from discovery import AppHealth, Outcome

from ._admission import Admission
from ._router import outcome_of


class ReplicaHealth:
    """A replica's own view of its app, learnt from the requests it ran."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._app = AppHealth()

    @property
    def healthy(self) -> bool:
        """False once the app failed requests in a row, until one succeeds."""
        return self._app.healthy

    def observe(self, error: Exception | None) -> None:
        """A request the app ran ended: with `error`, or well (None).

        One that ran out of its caller's deadline says nothing: the caller chose the
        deadline, and slowness is its balancer's business (as is a cancelled one's).
        """
        outcome = Outcome.OK if error is None else replica_outcome(error)
        if outcome is not Outcome.DEADLINE_EXCEEDED:
            self._app.observe(outcome)

    def pong(self, up: bool = True) -> dict[str, object]:
        """The params of a PONG; `up`: whatever else the replica knows of its app (its probe)."""
        return {"healthy": up and self._app.healthy, **self._admission.report()}


def replica_outcome(error: Exception) -> Outcome:
    """How the caller will take the error this replica answers with (the wire code decides)."""
    if isinstance(error, transport.RemoteError):
        return outcome_of(error, sent=True)
    code = transport.error_code_of(error)
    return outcome_of(transport.RemoteError(code, str(error)), sent=True)
