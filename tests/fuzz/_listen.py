"""Sending one case on a raw socket and checking the answer, for the listener fuzzers.

Only asyncio sockets: the tests run on the event loop, under the blockbuster fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from transport import Limits
from transport._frame import MAGIC

from . import _budget
from ._http_cases import HttpCase, answered, known_500, read_http_answer
from ._mesh_cases import MeshCase, decoder_refuses, is_http, read_answer

CONNECT_TIMEOUT: Final = 10.0
CASE_DEADLINE: Final = 15.0  # seconds one connection may take; more is a hang
ROUTING_5XX: Final[dict[int, bytes | None]] = {502: b'"error"', 503: b'"error"', 504: b'"error"'}


@dataclass
class Exchange:
    """What came back for one case."""

    answer: bytes
    reset: bool  # the peer reset the connection: the answer's tail may be lost
    hung: bool  # the listener neither answered enough nor closed before the deadline


@dataclass
class Findings:
    """Cases whose answers broke an invariant, with enough to repeat them."""

    target: str
    items: list[str] = field(default_factory=list)

    def add(self, index: int, kind: str, data: bytes, problem: str) -> None:
        self.items.append(
            f"case {index} ({kind}, {len(data)} bytes): {problem}\n    input: {data[:300]!r}"
            + (" ..." if len(data) > 300 else "")
        )

    def report(self) -> str:
        head = f"{len(self.items)} finding(s) on {self.target}; {_budget.current().describe()}"
        return "\n".join([head, *self.items[:8]])


@dataclass
class Tally:
    """What the cases of one run met, so a run that checked nothing is noticed."""

    kinds: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)  # first HTTP status, or "closed"
    refused: int = 0  # mesh inputs the decoder refuses, whose GOAWAY was checked
    honoured: int = 0  # requests answered with a response over shared-memory sessions

    def count(self, table: dict[str, int], key: str, n: int = 1) -> None:
        table[key] = table.get(key, 0) + n


async def exchange(
    host: str,
    port: int,
    data: bytes,
    *,
    eof: Literal["now", "idle", "never"],
    enough: Callable[[bytes], bool] | None = None,
    idle: float = 0.5,
    deadline: float = 10.0,
) -> Exchange:
    """Send `data` and read until EOF, `enough(answer)` or `deadline`.

    `eof` says when to half-close: at once (the listener must then finish and close), when
    nothing came for `idle` seconds (an HTTP server drops its answer to a half-closed
    connection, so it is told only once it waits for more input), or never.
    """
    async with asyncio.timeout(CONNECT_TIMEOUT):
        reader, writer = await asyncio.open_connection(host, port)
    chunks: list[bytes] = []
    reset = hung = False
    try:
        writer.write(data)
        await writer.drain()
        if eof == "now":
            writer.write_eof()
        async with asyncio.timeout(deadline):
            while True:
                wait = idle if eof == "idle" else None
                try:
                    async with asyncio.timeout(wait):
                        chunk = await reader.read(65536)
                except TimeoutError:
                    if eof != "idle":
                        raise
                    writer.write_eof()  # quiet: it waits for more, so tell it there is none
                    eof = "now"
                    continue
                if not chunk:
                    break
                chunks.append(chunk)
                if enough is not None and enough(b"".join(chunks)):
                    break
    except (ConnectionResetError, BrokenPipeError):
        reset = True
    except TimeoutError:
        hung = True
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            async with asyncio.timeout(5):
                await writer.wait_closed()
    return Exchange(b"".join(chunks), reset, hung)


async def check_mesh_case(
    address: tuple[str, int],
    index: int,
    case: MeshCase,
    limits: Limits,
    findings: Findings,
    tally: Tally,
    *,
    sniffing: bool,
) -> None:
    """Send a mesh case and check the answer (see _mesh_cases); input a `sniffing` listener
    hands to its HTTP side is checked as HTTP."""
    tally.count(tally.kinds, case.kind)
    if sniffing and is_http(case.data):
        await check_http_case(
            address, index, HttpCase(case.kind, case.data), ROUTING_5XX, findings, tally
        )
        return

    def enough(answer: bytes) -> bool:
        return bool(case.replies) and read_answer(answer, complete=False).replied >= case.replies

    eof: Literal["now", "never"] = "never" if case.replies else "now"
    got = await exchange(*address, case.data, eof=eof, enough=enough, deadline=CASE_DEADLINE)
    answer = read_answer(got.answer, complete=not got.reset)
    if got.hung:
        findings.add(index, case.kind, case.data, f"no close within {CASE_DEADLINE} s (a hang)")
    for problem in answer.problems:
        findings.add(index, case.kind, case.data, problem)
    if case.replies and not got.hung and answer.replied < case.replies:
        missing = sorted(case.replies - answer.replied)
        findings.add(index, case.kind, case.data, f"honest session got no reply on {missing}")
    undecided = sniffing and len(case.data) < len(MAGIC)  # the sniffer never handed it over
    if not got.reset and not got.hung and not undecided and decoder_refuses(case.data, limits):
        tally.refused += 1
        if not answer.goaway:
            findings.add(index, case.kind, case.data, "refused input closed without a GOAWAY")
    if case.kind == "shm":
        tally.honoured += len(answer.responses)


async def check_http_case(
    address: tuple[str, int],
    index: int,
    case: HttpCase,
    allowed_5xx: dict[int, bytes | None],
    findings: Findings,
    tally: Tally,
) -> None:
    """Send an HTTP case and check the answer (see _http_cases)."""
    eof: Literal["idle", "never"] = "never" if case.honest else "idle"
    got = await exchange(*address, case.data, eof=eof, enough=answered, deadline=CASE_DEADLINE)
    if got.hung:
        findings.add(index, case.kind, case.data, f"no answer or close within {CASE_DEADLINE} s")
    if known_500(case.data):  # pinned by its own xfail test: keep looking for others
        allowed_5xx = {**allowed_5xx, 500: None}
    answer = read_http_answer(got.answer, allowed_5xx)
    for problem in answer.problems:
        findings.add(index, case.kind, case.data, problem)
    tally.count(tally.statuses, str(answer.statuses[0]) if answer.statuses else "closed")
    if case.honest and not (answer.statuses and 200 <= answer.statuses[0] < 300):
        got_what = answer.statuses or got.answer[:200]
        findings.add(index, case.kind, case.data, f"honest request got {got_what!r}")


async def bounded_gather(jobs: Sequence[Callable[[], Awaitable[None]]], concurrency: int) -> None:
    """Run coroutine factories `jobs`, at most `concurrency` at once."""
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await job()

    async with asyncio.TaskGroup() as group:
        for job in jobs:
            group.create_task(one(job))
