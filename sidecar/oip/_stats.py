"""The statistics extension: per-model counts and cumulative times, from our own counters.

Every request the OIP front doors serve for a model (service) is counted, and its time
split as Triton reports it: `compute_input` (reading inputs, from shared memory too),
`compute_infer` (the mesh round trip to the model), `compute_output` (preparing outputs);
`queue` and `cache_hit` stay at zero (the replica's queue is its own). Pure bookkeeping:
callers pass durations and `now`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Duration:
    """How many times something happened and how long it took in all, in nanoseconds."""

    count: int = 0
    ns: int = 0


@dataclass(frozen=True, slots=True)
class ModelStats:
    """A model's statistics as the extension reports them (inference_stats and counts)."""

    name: str
    version: str
    last_inference_ms: int
    inference_count: int
    execution_count: int
    success: Duration
    fail: Duration
    queue: Duration
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration
    cache_hit: Duration


@dataclass(slots=True)
class _Counters:
    last_ms: int = 0
    ok: int = 0
    ok_ns: int = 0
    failed: int = 0
    failed_ns: int = 0
    input_ns: int = 0
    infer_ns: int = 0
    output_ns: int = 0


class StatsBook:
    """Counters per model; `observe` each finished request, `stats` to report."""

    def __init__(self) -> None:
        self._models: dict[str, _Counters] = {}

    def models(self) -> list[str]:
        """The models seen so far, sorted."""
        return sorted(self._models)

    def observe(
        self,
        model: str,
        ok: bool,
        total_ns: int,
        now_ms: int,
        *,
        input_ns: int = 0,
        infer_ns: int | None = None,
        output_ns: int = 0,
    ) -> None:
        """Count one request of `model` (`infer_ns` defaults to all of `total_ns`)."""
        counters = self._models.get(model)
        if counters is None:
            counters = self._models[model] = _Counters()
        counters.last_ms = now_ms
        if ok:
            counters.ok += 1
            counters.ok_ns += total_ns
            counters.input_ns += input_ns
            counters.infer_ns += total_ns if infer_ns is None else infer_ns
            counters.output_ns += output_ns
        else:
            counters.failed += 1
            counters.failed_ns += total_ns

    def stats(self, model: str, version: str) -> ModelStats:
        """The statistics of `model` (all zero if it has not been asked anything yet)."""
        c = self._models.get(model) or _Counters()
        return ModelStats(
            name=model,
            version=version,
            last_inference_ms=c.last_ms,
            inference_count=c.ok,
            execution_count=c.ok,
            success=Duration(c.ok, c.ok_ns),
            fail=Duration(c.failed, c.failed_ns),
            queue=Duration(c.ok, 0),
            compute_input=Duration(c.ok, c.input_ns),
            compute_infer=Duration(c.ok, c.infer_ns),
            compute_output=Duration(c.ok, c.output_ns),
            cache_hit=Duration(),
        )
