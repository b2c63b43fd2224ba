"""The `sidecar` command, run as users run it, in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import child_env


def sidecar(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.timeout(150)
def test_demo_runs_a_mesh_checks_every_answer_and_exits_zero() -> None:
    result = sidecar("demo", "--requests", "10")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mesh stopped cleanly" in result.stdout
    assert " 0 wrong" in result.stdout
    for path in (
        "direct tcp -> replica 0",
        "direct shm alloc() -> replica 1",
        "2 sidecars, network",
        "2 sidecars, shm alloc()",
        "proxyless (mDNS), shm alloc()",
    ):
        assert path in result.stdout
    assert "shared-memory directory left empty" in result.stdout


def test_bad_usage_exits_2_and_says_why() -> None:
    result = sidecar("demo", "--requests", "0")
    assert result.returncode == 2
    assert "--requests" in result.stderr
    assert sidecar("no-such-command").returncode == 2


@pytest.mark.timeout(150)
def test_bench_transfer_prints_the_table_and_writes_json_and_plot(tmp_path: Path) -> None:
    result = sidecar(
        "bench",
        "transfer",
        "--sizes",
        "4KiB,128KiB",
        "--reps",
        "20",
        "--out",
        str(tmp_path),
        "--transports",
        "arrowmesh-tcp,arrowmesh-uds,tcp-raw,grpc-unary",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "arrowmesh-tcp" in result.stdout
    assert "targets" in result.stdout
    report = json.loads((tmp_path / "transfer.json").read_text())
    cells = {(r["transport"], r["size"]) for r in report["results"]}
    assert ("arrowmesh-uds", 131072) in cells
    assert ("tcp-raw", 4096) in cells
    assert all(r["n"] == 20 for r in report["results"])
    assert (tmp_path / "transfer.png").stat().st_size > 10_000


@pytest.mark.timeout(150)
def test_bench_all_runs_discovery_and_writes_json_and_the_report(tmp_path: Path) -> None:
    # `bench all` as CI can afford it: one benchmark (discovery, the quickest) and the report.
    report_md = tmp_path / "REPORT.md"
    result = sidecar(
        "bench", "all", "--quick", "--only", "discovery", "--out", str(tmp_path),
        "--report", str(report_md), timeout=140,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "discovery.json").read_text())
    assert set(report["backends"]) == {"consul", "mdns", "static"}
    for backend, samples in report["samples"].items():
        assert len(samples) == 2, backend
        assert all(a is not None and r is not None for a, r in samples), backend
    text = report_md.read_text()
    for backend in ("consul", "mdns", "static"):
        assert f"| discovery | {backend}: seen within 1.0 s |" in text
    assert "## Discovery" in text and "| registry |" in text
    assert "bench discovery: done" in result.stdout


def test_bench_report_covers_every_committed_result(tmp_path: Path) -> None:
    results = Path(__file__).resolve().parents[2] / "bench" / "results"
    report_md = tmp_path / "REPORT.md"
    result = sidecar("bench", "report", "--results", str(results), "--report", str(report_md))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = report_md.read_text()
    for name in ("transfer", "discovery", "hop", "balance"):
        if (results / f"{name}.json").exists():
            assert f"| {name} |" in text, name  # its targets and its machine
            assert f"`sidecar bench {name}`" in text, name
        if (results / f"{name}.png").exists():
            plot = os.path.relpath(results / f"{name}.png", tmp_path)
            assert f"![{name}]({plot})" in text, name
    assert " met" in result.stdout or " missed" in result.stdout


def test_bench_report_without_results_says_so(tmp_path: Path) -> None:
    result = sidecar("bench", "report", "--results", str(tmp_path), "--report", str(tmp_path / "R"))
    assert result.returncode == 1
    assert "no benchmark results" in result.stdout
    assert not (tmp_path / "R").exists()


def test_bench_all_rejects_an_unknown_benchmark(tmp_path: Path) -> None:
    result = sidecar("bench", "all", "--only", "warp", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "discovery,transfer,hop,balance" in result.stdout


def test_bench_discovery_rejects_an_unknown_backend(tmp_path: Path) -> None:
    result = sidecar("bench", "discovery", "--backends", "etcd", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "consul,mdns,static" in result.stdout


@pytest.mark.timeout(150)
def test_bench_hop_measures_every_route_and_writes_json_and_plot(tmp_path: Path) -> None:
    result = sidecar("bench", "hop", "--quick", "--out", str(tmp_path), timeout=140)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "targets" in result.stdout
    report = json.loads((tmp_path / "hop.json").read_text())
    cells = {(c["group"], c["route"]): c for c in report["cells"]}
    skipped = {(s["section"], s["route"]) for s in report["skipped"]}
    for group in ("mesh-c1", "mesh-c16", "http-c1", "http-c16", "large-alloc", "large-copy"):
        section = group.partition("-")[0]
        routes = {"mesh": ("direct", "sidecar-1hop", "sidecar-2hop", "haproxy-1hop",
                           "haproxy-2hop"),
                  "http": ("direct", "sidecar-1hop", "haproxy-1hop"),
                  "large": ("direct", "sidecar-2hop")}[section]  # fmt: skip
        for route in routes:
            if (section, route) not in skipped:  # HAProxy may not be installed here
                assert cells[group, route]["n"] > 0, (group, route)
    assert ("mesh", "sidecar-1hop") not in skipped and ("http", "sidecar-1hop") not in skipped
    assert cells["mesh-c1", "sidecar-2hop"]["hop_cpu_s_per_request"] > 0
    assert all(check["ok"] for check in report["paths"]), report["paths"]
    assert all(modes.get("copied", 0) == 0 for modes in report["relayed_during_large"].values())
    assert report["shm_leftovers"] == []
    assert (tmp_path / "hop.png").stat().st_size > 10_000


def test_bench_hop_rejects_an_unknown_section(tmp_path: Path) -> None:
    result = sidecar("bench", "hop", "--sections", "grpc", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "mesh,http,large" in result.stderr


@pytest.mark.timeout(150)
def test_bench_balance_measures_every_policy_and_writes_json_and_plot(tmp_path: Path) -> None:
    result = sidecar("bench", "balance", "--quick", "--out", str(tmp_path), timeout=140)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "targets" in result.stdout
    report = json.loads((tmp_path / "balance.json").read_text())
    rows = {(r["scenario"], r["policy"]): r for r in report["rows"]}
    policies = ("peak_ewma", "least_request", "round_robin", "ring_hash (64 keys)")
    assert set(rows) == {(s, p) for s in ("slow", "failing") for p in policies}
    for (scenario, policy), row in rows.items():
        assert row["n"] == 300 and row["short_blocks"] == 0, (scenario, policy)
        assert row["failed"] == 0, (scenario, policy, row["errors"])
        assert 0 <= row["retries"] <= row["allowed_retries"], (scenario, policy)
        assert abs(sum(row["shares"]) - 1) < 1e-9, (scenario, policy)
    assert rows["failing", "peak_ewma"]["answered_shares"][3] == 0  # r3 fails every request
    assert rows["slow", "round_robin"]["shares"] == pytest.approx([0.25] * 4, abs=0.02)
    assert rows["slow", "round_robin"]["retries"] == 0
    assert {t["scenario"] for t in report["targets"]} == {"slow", "failing"}
    assert (tmp_path / "balance.png").stat().st_size > 10_000


def test_bench_balance_rejects_an_unknown_scenario(tmp_path: Path) -> None:
    result = sidecar("bench", "balance", "--scenarios", "flaky", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "slow,failing" in result.stdout


@pytest.mark.timeout(150)
def test_bench_soak_under_every_fault_loses_no_request_and_leaks_nothing(tmp_path: Path) -> None:
    result = sidecar("bench", "soak", "--quick", "--out", str(tmp_path), timeout=140)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "soak.json").read_text())
    requests = report["requests"]
    assert requests["sent"] > 1000 and requests["failed"] == 0, requests
    assert requests["succeeded"] == requests["sent"] and requests["wrong_answers"] == 0
    faults = {f["fault"]: f for f in report["faults"]}
    assert len(faults) == 7 and all(f["ok"] for f in faults.values()), faults
    start, end = report["resources"]["start"], report["resources"]["end"]
    assert end["leases"] <= start["leases"] and end["shm_used_bytes"] <= start["shm_used_bytes"]
    assert report["shm_leftovers"] == []


@pytest.mark.timeout(150)
def test_bench_oip_measures_every_path_that_runs_and_writes_json_and_plot(tmp_path: Path) -> None:
    # Triton's paths run when its venv is there or can be made (tests/oip_upstream makes
    # it first); with ARROWMESH_MODEL_SERVERS=off they are skipped, saying so.
    result = sidecar("bench", "oip", "--quick", "--out", str(tmp_path), timeout=140)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "targets" in result.stdout
    report = json.loads((tmp_path / "oip.json").read_text())
    assert report["machine"]["cpu_count"] >= 1
    skipped = {(s["path"], s["size"]): s["reason"] for s in report["skipped"]}
    cells = {(r["path"], r["size"]): r for r in report["results"]}
    for size in (4096, 64 << 20):
        for protocol in ("http", "grpc"):
            for route in ("triton", "sidecar-triton", "sidecar-serve"):
                for shm in ("inline", "shm"):
                    key = (f"{protocol}/{route}/{shm}", size)
                    assert key in skipped or cells[key]["n"] > 0, key
                    assert route != "sidecar-serve" or key not in skipped, skipped[key]
    assert len(report["targets"]) == 8
    for target in report["targets"]:
        assert isinstance(target["met"], bool) and target["detail"], target
    assert report["shm_leftovers"] == []
    assert (tmp_path / "oip.png").stat().st_size > 10_000
