"""An infer request encoded once for all its tries: a retry never sends a different body,
and tensors in shared memory are sent again by reference, never copied again (issue 7).

A proxyless client's router may send one request to several endpoints (retries, a hedge).
The request is encoded at most twice, each the first time a try needs it, and every later
try sends that encoding as it is:

- for links over the network: tensors inline, or in an Arrow IPC body that refers to the
  caller's arrays (nothing is copied before the socket write);
- for links that share memory: large tensors copied once into leases (or passed by
  reference when they already live in shared memory). The request keeps its own hold on
  those leases until `close`, so a later try can pass the same descriptors on, with a hold
  for its own peer, as a sidecar relays a caller's descriptors.

Invariant: a descriptor is sent to a peer only with a hold for that peer (a link takes it
back, `unplace`, when the send fails before the header went out); the request's own hold
ends in `close`, after which only peers' holds keep the leases.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import transport
from transport import BodyPart, Header, Kind, Limits, Placer, ShmDomain, ShmPlacer

from ._errors import InvalidInput
from ._trace import ensure_traceparent


@dataclass(frozen=True, slots=True)
class _Shared:
    """The encoding for links that share memory, and the descriptors of ours it holds."""

    header: Header
    parts: list[BodyPart]
    domain: ShmDomain
    own: list[list[object]]  # descriptors


class EncodedRequest:
    """One infer request, encoded once per kind of link and sent as is on every try."""

    def __init__(
        self,
        service: str,
        inputs: Mapping[str, object],
        limits: Limits,
        *,
        affinity_key: str | bytes | None,
        traceparent: str | None,
        arrow_in_shm: bool,
    ) -> None:
        self._inputs = inputs
        self._service, self._limits, self._key = service, limits, affinity_key
        self._traceparent = ensure_traceparent(traceparent)  # one trace for every try
        self._arrow_in_shm = arrow_in_shm
        self._network: tuple[Header, list[BodyPart]] | None = None
        self._shared: _Shared | None = None
        self._nothing_shared = False  # the shared-memory encoding placed nothing there

    def for_link(self, placer: Placer | None) -> tuple[Header, list[BodyPart]]:
        """The header and body parts to send on a link with `placer`. Raises InvalidInput."""
        if isinstance(placer, ShmPlacer) and not self._nothing_shared:
            shared = self._shared
            if shared is None:
                return self._encode_shared(placer)
            if shared.domain is placer.domain and shared.domain.hold(shared.own, placer.peer):
                placer.forward(shared.header, self._inputs)  # others' descriptors, if any
                return shared.header, shared.parts
        if self._network is None:
            self._network = self._encode(None)
        return self._network

    def close(self) -> None:
        """The request is over: let go of its own hold on its leases."""
        shared, self._shared = self._shared, None
        if shared is not None:
            shared.domain.release(shared.domain.proc, shared.own)

    def _encode_shared(self, placer: ShmPlacer) -> tuple[Header, list[BodyPart]]:
        header, parts = self._encode(placer_for(placer, self._arrow_in_shm))
        refs = transport.header_refs(header)
        if not refs:  # small tensors, or no room: the same as the network encoding
            self._nothing_shared = True
            self._network = header, parts
            return header, parts
        domain = placer.domain
        own = [ref for ref in refs if domain.owns(ref[0])]
        held = domain.hold(own, domain.proc)
        assert held, "leases placed a moment ago are live"
        self._shared = _Shared(header, parts, domain, own)
        return header, parts

    def _encode(self, place: Placer | None) -> tuple[Header, list[BodyPart]]:
        return build_request(
            self._service, self._inputs, self._limits, self._key, self._traceparent, place
        )


def build_request(
    service: str,
    inputs: Mapping[str, object],
    limits: Limits,
    affinity_key: str | bytes | None,
    traceparent: str | None,
    place: Placer | None = None,
) -> tuple[Header, list[BodyPart]]:
    """The header and body parts of an infer request. Raises InvalidInput."""
    try:
        metas, parts, body_len, body_ref = transport.encode_message(inputs, limits, place)
    except transport.TransportError as exc:
        raise InvalidInput(str(exc)) from None
    params: dict[str, object] = {} if affinity_key is None else {"affinity": affinity(affinity_key)}
    header = Header(
        Kind.REQUEST,
        service=service,
        method="infer",
        traceparent=ensure_traceparent(traceparent),
        body_len=body_len,
        tensors=metas,
        params=params,
        body_ref=body_ref,
    )
    return header, parts


def placer_for(place: Placer | None, arrow_in_shm: bool) -> Placer | None:
    """The link's placer, asked to write large messages as one Arrow IPC stream if wanted."""
    if arrow_in_shm and isinstance(place, ShmPlacer):
        return dataclasses.replace(place, arrow_body=True)
    return place


def affinity(value: str | bytes) -> str:
    """An affinity key as it travels (bytes in hex)."""
    return value if isinstance(value, str) else value.hex()
