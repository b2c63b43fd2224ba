"""Relaying a mesh message to the next hop without decoding its tensors.

A sidecar that only forwards reads the header and passes the body on as bytes. Shared
memory descriptors go on as they are when the next hop shares the domain (the link keeps
this hop's hold until the next one releases them: transport's KeptRefs); only when the
next hop cannot read them (another host, another directory) are the tensors materialised
into the body, once. DESIGN.md: a byte-forwarding hop costs about what HAProxy costs, a
parsing one five times that.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

import transport
from transport import BodyPart, Header, Limits, Message, Placer, ShmPlacer


def relay_parts(
    message: Message, placer: Placer | None, limits: Limits
) -> tuple[Header, list[BodyPart]]:
    """The header and body parts that send `message` on over a link with `placer`.

    Raises transport.FrameError / LimitExceeded if materialising the tensors fails.
    """
    header = message.header
    if not transport.header_refs(header):
        return header, _network_body(message)
    if isinstance(placer, ShmPlacer) and placer.forward(header, message.holder):
        return header, _network_body(message)
    # The next hop cannot read shared memory: the tensors travel in the body, copied once.
    tensors = transport.decode_tensors(header.tensors, message.body_view(), limits, message.shared)
    metas, parts, body_len, body_ref = transport.encode_message(tensors, limits, placer)
    return dataclasses.replace(header, tensors=metas, body_len=body_len, body_ref=body_ref), parts


def keepalive(message: Message) -> list[BodyPart]:
    """An empty body part that keeps `message`'s descriptors held until the reply is written.

    A reply may pass the caller's own lease back by reference (an echo); our hold on it
    must outlast the reply frame, or the caller could see its lease end first. The part
    is zero bytes long: it is never written, only kept in the send's part list.
    """
    if not message.shared:
        return []
    view: np.ndarray[Any, Any] = message.shared[0][:0]
    return [view]


def _network_body(message: Message) -> list[BodyPart]:
    return [] if message.body is None else [message.body.memory()]
