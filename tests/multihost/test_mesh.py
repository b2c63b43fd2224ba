"""The compose stack across network "hosts" (see conftest.py): real sidecars, replicas, the
Consul emulator and pipeline programs, each in the network namespace of its host.

What each scenario costs on the idle 2-core machine (about 8 s for the module; two to three
times that while other test runs share the cores):
    building the shared mesh        about 3 s (first test's setup); stopping it, under 1 s
    shared memory vs network        under 1 s (a second pipeline program, on a replica host)
    partitioned consul              1-3 s (waits for the sidecars' 2 s Consul keepalives:
                                    once stuck in the partition, once re-registering)
    mdns                            about 2 s (three more sidecars, mDNS probing, a goodbye)
    killed replica host             under 1 s; last in the module, because the next test
                                    would wait about 4 s for `whole_mesh` to restart the host

No host's mDNS reaches the machine's network: every process runs in a namespace whose only
interfaces are its loopback and its veth into the test bridge.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import wait_for

from .conftest import MESH_PORT, SERVICE, Mesh, Program, Sidecar

pytestmark = pytest.mark.timeout(60)

MIB = 1 << 20
MODES = ("reference", "copied", "network")


def relayed(mesh: Mesh, sidecar: Sidecar) -> dict[str, float]:
    """Tensor bytes `sidecar` relayed so far, by mode."""
    metrics = mesh.metrics(sidecar)
    return {mode: metrics.total("arrowmesh_relayed_bytes_total", mode=mode) for mode in MODES}


def relayed_by(mesh: Mesh, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    return {name: relayed(mesh, mesh.sidecars[name]) for name in names}


def no_leases(program: Program, sidecar: Sidecar) -> Callable[[], bool]:
    """True once the client of `program` for `sidecar` holds no shared-memory lease."""
    return lambda: program.call("shm_stats", sidecar=sidecar.mesh)["leases"] == 0


def growth(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in after}


def test_cross_host_calls_take_the_network_and_same_host_calls_shared_memory(
    whole_mesh: Mesh,
) -> None:
    mesh = whole_mesh
    calls, nbytes = 4, MIB  # 1 MiB tensors: far over the 64 KiB inline threshold
    sidecars = ("caller", *mesh.replica_names)
    caller = mesh.sidecars["caller"]

    # Across hosts: the pipeline on the caller host, through its sidecar, to a replica host.
    before = relayed_by(mesh, sidecars)
    shm_before = mesh.caller.call("shm_stats", sidecar=caller.mesh)
    result = mesh.caller.infer(caller, count=calls, elements=nbytes // 4)
    assert result == {"ok": calls, "failed": 0, "errors": []}
    after = relayed_by(mesh, sidecars)
    shm_after = mesh.caller.call("shm_stats", sidecar=caller.mesh)
    # The pipeline handed the requests to its sidecar in shared memory; the sidecar copied
    # them onto the network once (its peer shares no memory) and got the replies as bytes.
    assert shm_after["bytes_copied"] - shm_before["bytes_copied"] >= calls * nbytes
    out = growth(after["caller"], before["caller"])
    assert out["copied"] == calls * nbytes and out["network"] >= calls * nbytes, out
    assert out["reference"] == 0, out
    # On the replica hosts the requests arrived as bytes and the replies, written into the
    # replica host's shared memory, left copied onto the network.
    far = [growth(after[n], before[n]) for n in mesh.replica_names]
    assert sum(g["copied"] for g in far) == calls * nbytes, far
    assert sum(g["network"] for g in far) >= calls * nbytes, far
    assert sum(g["reference"] for g in far) == 0, far

    # On one host: a pipeline beside replica 1 calls through replica 1's own sidecar.
    local = mesh.program("replica-1")
    near = mesh.sidecars["replica-1"]
    before = relayed_by(mesh, sidecars)
    result = local.infer(near, count=calls, elements=nbytes // 4)
    assert result == {"ok": calls, "failed": 0, "errors": []}
    after = relayed_by(mesh, sidecars)
    # Requests and replies passed by reference both ways; not a byte was copied or sent.
    same = growth(after["replica-1"], before["replica-1"])
    assert same == {"reference": 2 * calls * nbytes, "copied": 0, "network": 0}, same
    for name in ("caller", "replica-2"):
        assert growth(after[name], before[name]) == dict.fromkeys(MODES, 0.0)
    stats = local.call("shm_stats", sidecar=near.mesh)
    assert stats["bytes_by_reference"] >= calls * nbytes  # the replies, read in place
    # Every lease went back, on both hosts that lent one.
    for program, sidecar in ((mesh.caller, caller), (local, near)):
        wait_for(no_leases(program, sidecar), 5, f"{program.proc.name}'s leases to be returned")


def test_a_partitioned_consul_host_leaves_traffic_on_the_last_good_set(whole_mesh: Mesh) -> None:
    mesh = whole_mesh
    caller = mesh.sidecars["caller"]
    expected = sorted(mesh.sidecars[n].id for n in mesh.replica_names)
    assert mesh.endpoints(caller) == (expected, False)
    with mesh.partitioned("consul"):
        assert not mesh.caller.call("connect", address=mesh.consul_address, timeout=0.5)
        # Each replica's sidecar has tried Consul since (its TTL keepalive, every 2 s) and
        # has the request stuck in the partition: the registry is really gone for everyone.
        wait_for(
            lambda: all(mesh.stuck_towards(n, mesh.consul_address) for n in mesh.replica_names),
            10,
            "every replica's sidecar to have a Consul request stuck in the partition",
        )
        before = mesh.served(caller)
        result = mesh.caller.infer(caller, count=200, workers=4)
        assert result == {"ok": 200, "failed": 0, "errors": []}
        served = mesh.served(caller)
        assert all(served[n] > before[n] for n in mesh.replica_names), (before, served)
        assert mesh.endpoints(caller)[0] == expected

    # Healed: the caller's watch follows Consul again, and so do the replicas' sidecars.
    # Consul forgets replica 2; the caller drops it, then replica 2's sidecar registers
    # again (its keepalive finds the registration gone) and the caller takes it back.
    updates = mesh.metrics(caller).total("arrowmesh_cluster_updates_total", service=SERVICE)
    gone = mesh.sidecars["replica-2"].id
    url = f"http://{mesh.consul_address}/v1/agent/service/deregister/{gone}"
    answer = mesh.caller.call("http", method="PUT", url=url)
    assert answer["status"] == 200, answer

    def dropped_and_back() -> bool:
        moved = mesh.metrics(caller).total("arrowmesh_cluster_updates_total", service=SERVICE)
        return moved >= updates + 2 and mesh.endpoints(caller) == (expected, False)

    wait_for(dropped_and_back, 20, "the caller to drop replica 2 and take it back")
    assert mesh.caller.infer(caller, count=20, workers=2)["ok"] == 20


def test_mdns_across_the_bridge_finds_the_replicas_without_consul(whole_mesh: Mesh) -> None:
    mesh = whole_mesh
    port = MESH_PORT + 10  # beside the Consul sidecars: one more sidecar per host
    started = [
        mesh.start_sidecar(n, f"sidecar-{n}-mdns", mesh.replica_flags(n, mdns=True))
        for n in mesh.replica_names
    ]
    caller_flags = mesh.caller_flags(mdns=True)
    started.append(mesh.start_sidecar("caller", "sidecar-caller-mdns", caller_flags))
    try:
        *fronts, caller = [mesh.await_sidecar(s) for s in started]
        expected = sorted(s.id for s in fronts)  # registered over mDNS only: "embedder-k-mdns"
        start = mesh.served(caller, port)

        def both_found_and_serving() -> bool:
            mesh.caller.infer(caller, count=8, workers=2)  # failures are fine while waiting
            served = mesh.served(caller, port)
            return mesh.endpoints(caller)[0] == expected and all(
                served[n] > start[n] for n in mesh.replica_names
            )

        wait_for(both_found_and_serving, 20, f"the mDNS caller to find and use {expected}")
        # A sidecar that stops says goodbye over mDNS: the caller drops it at once.
        assert fronts[1].proc.stop() == 0
        wait_for(lambda: mesh.endpoints(caller)[0] == [fronts[0].id], 10, "the goodbye")
        assert mesh.caller.infer(caller, count=20, workers=2)["ok"] == 20
    finally:
        codes = [s.proc.stop() for s in started]
    assert codes == [0, 0, 0]


def test_a_killed_replica_host_loses_no_request_under_load(whole_mesh: Mesh) -> None:
    mesh = whole_mesh
    caller = mesh.sidecars["caller"]
    count, victim, survivor = 1000, "replica-2", "replica-1"
    before = mesh.served(caller)
    load = mesh.caller.send(
        "infer", sidecar=caller.mesh, service=SERVICE, count=count, workers=4, elements=16,
        timeout=10.0, time_limit=40.0, progress=1,
    )  # fmt: skip
    load.wait_progress(50, timeout=20)
    wait_for(lambda: mesh.served(caller)[victim] >= before[victim] + 20, 20, "the victim to serve")
    mesh.kill_host(victim)  # SIGKILL: requests in flight there die with it
    at_kill = load.poll()
    result = load.result(timeout=50)
    # The caller's sidecar retried what the dead host dropped, and routed the rest around it.
    assert result == {"ok": count, "failed": 0, "errors": []}
    assert at_kill <= count // 2, f"the load was nearly over ({at_kill}) when the host died"
    served = mesh.served(caller)
    assert served[survivor] - before[survivor] >= count - at_kill
