"""Summaries of each policy's run, and the targets, each judged within one run: pure.

Latency and shares are those of the measured blocks; failures and retries count every
request the policy's client made, warm-up included (a request lost while the balancer was
still learning is lost all the same). Retries are the replicas' count of tries minus the
requests made.

The retry budget allows, in any `window` seconds, max(`min_retries_per_second` * window,
`ratio` * first tries in it) retries (discovery.RetryBudget). The bound checked here is
that formula applied once to the whole run, as if every request fell in one window: the
real sliding budget allows at least that much over a run spanning several windows, so the
check is the stricter one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from discovery import RetryBudget

from ._load import Block, RowRun

P99_BOUND: Final = 0.33
SUBJECT: Final = "peak_ewma"
BASELINE: Final = "round_robin"
STARVED_BELOW: Final = 0.5  # a healthy replica under half its fair share of a block


@dataclass(frozen=True, slots=True)
class RowSummary:
    """One policy in one scenario, as reported."""

    scenario: str
    policy: str
    n: int
    p50_s: float | None
    p99_s: float | None
    mean_s: float | None
    fast_p99_s: float | None
    """p99 of the measured requests the fast replicas answered: the floor a perfect
    balancer would reach (the odd replica never used)."""
    requests: int
    requests_measured: int
    failed: int
    failed_measured: int
    errors: dict[str, int]
    tries: int
    retries: int
    retries_measured: int
    allowed_retries: float
    shares: tuple[float, ...]
    """Each replica's share of the measured tries."""
    odd_share: float
    """The slow or failing replica's share of the measured tries."""
    answered_shares: tuple[float, ...]
    requests_per_s: float
    client_cpu_per_request_s: float
    short_blocks: int
    """Blocks the time cap cut short."""
    stickiness: float | None
    """Keyed rows: share of requests answered by their key's usual replica."""
    starved_until_s: float | None
    """Last block end at which a healthy replica got under half its fair share (None: never)."""
    starved: tuple[int, ...]
    """The replicas that were starved at some block."""
    lowest_share: float | None
    """The lowest block share of a healthy fast replica, as a fraction of its fair share."""


def summarise(run: RowRun, budget: RetryBudget, block_size: int, warm_size: int) -> RowSummary:
    """The numbers of the report and JSON for one policy's run."""
    measured = [b for b in run.blocks if b.phase == "measure"]
    replicas = len(run.scenario.delays)
    tries = [sum(b.tries[i] for b in measured) for i in range(replicas)]
    answered = [sum(b.answered[i] for b in measured) for i in range(replicas)]
    requests = sum(b.requests for b in run.blocks)
    requests_measured = sum(b.requests for b in measured)
    all_tries = sum(sum(b.tries) for b in run.blocks)
    seconds = _seconds(run, range(replicas))
    fast = _seconds(run, [i for i in range(replicas) if run.scenario.role(i) == "fast"])
    wall = sum(b.elapsed_s for b in measured)
    starved_until, starved, lowest = _starvation(run)
    short = sum(
        b.requests < (block_size if b.phase == "measure" else warm_size) for b in run.blocks
    )
    return RowSummary(
        scenario=run.scenario.name,
        policy=run.row.name,
        n=len(seconds),
        p50_s=float(np.percentile(seconds, 50)) if len(seconds) else None,
        p99_s=float(np.percentile(seconds, 99)) if len(seconds) else None,
        mean_s=float(seconds.mean()) if len(seconds) else None,
        fast_p99_s=float(np.percentile(fast, 99)) if len(fast) else None,
        requests=requests,
        requests_measured=requests_measured,
        failed=sum(b.failures for b in run.blocks),
        failed_measured=sum(b.failures for b in measured),
        errors=dict(run.errors),
        tries=all_tries,
        retries=all_tries - requests,
        retries_measured=sum(tries) - requests_measured,
        allowed_retries=allowance(budget, requests),
        shares=_fractions(tries),
        odd_share=sum(
            share for i, share in enumerate(_fractions(tries)) if run.scenario.role(i) != "fast"
        ),
        answered_shares=_fractions(answered),
        requests_per_s=requests_measured / wall if wall > 0 else 0.0,
        client_cpu_per_request_s=(
            sum(b.client_cpu_s for b in measured) / requests_measured if requests_measured else 0.0
        ),
        short_blocks=short,
        stickiness=_stickiness(run),
        starved_until_s=starved_until,
        starved=starved,
        lowest_share=lowest,
    )


def _seconds(run: RowRun, replicas: Iterable[int]) -> npt.NDArray[np.float64]:
    ns = [x for i in replicas for x in run.latencies_ns.get(i, [])]
    return np.asarray(ns, dtype=np.float64) / 1e9


def allowance(budget: RetryBudget, first_tries: int) -> float:
    """Retries the budget allows for `first_tries` requests in one window."""
    return max(budget.min_retries_per_second * budget.window, budget.ratio * first_tries)


def _fractions(counts: Sequence[int]) -> tuple[float, ...]:
    total = sum(counts)
    return tuple(c / total if total else 0.0 for c in counts)


def _stickiness(run: RowRun) -> float | None:
    if not run.key_answers:
        return None
    usual = sum(max(counter.values()) for counter in run.key_answers.values())
    total = sum(sum(counter.values()) for counter in run.key_answers.values())
    return usual / total if total else None


def _starvation(run: RowRun) -> tuple[float | None, tuple[int, ...], float | None]:
    """When the last block ended in which a healthy fast replica was starved, which ones,
    and the lowest block share of one, as a fraction of its fair share.

    Fair share: a block's tries over the fast healthy replicas, evenly (keyed rows are
    judged the same way, so their uneven key split can show up here too).
    """
    scenario = run.scenario
    fast = [i for i in range(len(scenario.delays)) if scenario.role(i) == "fast"]
    last: float | None = None
    lowest: float | None = None
    starved: set[int] = set()
    for block in run.blocks:
        total = sum(block.tries[i] for i in fast)
        if total < 10 * len(fast):  # too few tries to call anything a share
            continue
        fair = total / len(fast)
        share = min(block.tries[i] for i in fast) / fair
        lowest = share if lowest is None else min(lowest, share)
        below = [i for i in fast if block.tries[i] < STARVED_BELOW * fair]
        if below:
            starved.update(below)
            last = block.started_s + block.elapsed_s
    return last, tuple(sorted(starved)), lowest


@dataclass(frozen=True, slots=True)
class Verdict:
    """A target, the values it compares, and whether it was met (None: not measurable)."""

    scenario: str
    target: str
    detail: str
    met: bool | None
    subject: str
    value: float | None = None
    bound: float | None = None


def judge(summaries: Sequence[RowSummary]) -> list[Verdict]:
    """The targets of the scenarios measured, in report order."""
    verdicts: list[Verdict] = []
    by = {(s.scenario, s.policy): s for s in summaries}
    if any(s.scenario == "slow" for s in summaries):
        verdicts.append(_p99_ratio(by.get(("slow", SUBJECT)), by.get(("slow", BASELINE))))
    for s in summaries:
        if s.scenario != "failing":
            continue
        verdicts.append(
            Verdict("failing", f"{s.policy}: 0 failed requests",
                    f"{s.failed} failed of {s.requests}", s.failed == 0, s.policy,
                    float(s.failed), 0.0)
        )  # fmt: skip
        verdicts.append(
            Verdict("failing", f"{s.policy}: retries ≤ budget",
                    f"{s.retries} retries, budget {s.allowed_retries:g} for {s.requests} "
                    "requests", s.retries <= s.allowed_retries, s.policy, float(s.retries),
                    s.allowed_retries)
        )  # fmt: skip
    return verdicts


def _p99_ratio(subject: RowSummary | None, baseline: RowSummary | None) -> Verdict:
    target = f"{SUBJECT} p99 ≤ {P99_BOUND:g}x {BASELINE}'s"
    if subject is None or baseline is None or subject.p99_s is None or not baseline.p99_s:
        return Verdict("slow", target, "not measured", None, SUBJECT)
    ratio = subject.p99_s / baseline.p99_s
    detail = f"{subject.p99_s * 1e3:.2f} ms vs {baseline.p99_s * 1e3:.2f} ms = {ratio:.2f}x"
    if subject.fast_p99_s is not None:
        floor = subject.fast_p99_s / baseline.p99_s
        detail += (
            f" (slow replica's share {subject.odd_share * 100:.1f}%; {SUBJECT}'s requests the"
            f" fast replicas answered: p99 {subject.fast_p99_s * 1e3:.2f} ms = {floor:.2f}x)"
        )
    return Verdict("slow", target, detail, ratio <= P99_BOUND, SUBJECT, ratio, P99_BOUND)


def settle_note(summary: RowSummary, blocks: Sequence[Block]) -> str | None:
    """A line on a starved replica, if any, for the report: until when, how low, and
    (peak-EWMA) its latency estimate after the first block."""
    if summary.starved_until_s is None:
        return None
    measured = [b for b in blocks if b.phase == "measure"]
    into = bool(measured) and summary.starved_until_s > measured[0].started_s
    who = ", ".join(f"r{i}" for i in summary.starved)
    lowest = "" if summary.lowest_share is None else f", lowest {summary.lowest_share:.2f}x"
    estimates = blocks[0].router.get("estimates_s", {}) if blocks else {}
    first = ", ".join(
        f"r{i} {estimates[f'r{i}'] * 1e3:.1f} ms" for i in summary.starved if f"r{i}" in estimates
    )
    first = f"; estimate after its first block: {first}" if first else ""
    return (
        f"{summary.scenario}/{summary.policy}: {who} got under {STARVED_BELOW:g}x its fair share"
        f" of a block{lowest}, the last time {summary.starved_until_s:.1f} s after the client's"
        f" first request ({'into the measured blocks' if into else 'during the warm-up'}){first}"
    )
