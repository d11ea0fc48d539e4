"""A client given several coordinators moves on when one fails: against a coordinator that
refuses connections (every call, even one that is not idempotent, reaches the next one), and
against a real Raft group of three `longbow coordinator` processes whose coordinator the
client is using is killed with SIGKILL (writes, searches and catalog changes go on through
the other two, and every acknowledged row reads back)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import Server, _binary

from longbow import LongbowClient, LongbowConnectionError, LongbowValidationError


def _free_ports(n: int) -> list[int]:
    """`n` distinct free loopback ports (all held open while they are picked, so no port
    comes back twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


def test_coordinator_addresses_are_checked_before_anything_is_sent() -> None:
    bad: list[dict[str, object]] = [
        {"coordinators": []},
        {"coordinators": "localhost"},
        {"coordinators": [("localhost", 3000)]},
        {"coordinators": [("localhost", 0, 3001)]},
        {"coordinators": [""]},
        {"coordinators": ["a"], "host": "b"},
        {"data_port": 70000},
    ]
    for kwargs in bad:
        with pytest.raises(LongbowValidationError):
            LongbowClient(**kwargs)  # type: ignore[arg-type]


def test_a_coordinator_that_refuses_connections_is_passed_over_even_by_a_create(server: Server) -> None:
    data, meta = _free_ports(2)
    dead = ("127.0.0.1", data, meta)
    live = (server.host, server.data_port, server.meta_port)
    with LongbowClient(coordinators=[dead, live], retries=2) as client:
        # Not idempotent, but the refused attempt was never sent: it is sent to the next one.
        client.create_namespace("failover_refused", 4)
        assert client.insert("failover_refused", np.eye(4, dtype="float32"), ids=np.arange(4)) == 4
        assert client._at == 1  # it stays with the coordinator that answered
    with LongbowClient(coordinators=[dead], retries=0) as client:
        with pytest.raises(LongbowConnectionError) as info:
            client.list_namespaces()
        assert info.value.retryable and not info.value.sent


@pytest.fixture
def group(tmp_path: Path) -> Iterator[tuple[list[subprocess.Popen[str]], list[tuple[str, int, int]]]]:
    """Three coordinators forming one Raft group, and one shard node following them."""
    free = _free_ports(9)
    ports = [(free[i], free[i + 1], free[i + 2]) for i in range(0, 9, 3)]
    peers = ",".join(f"{i + 1}=127.0.0.1:{internal}" for i, (_, _, internal) in enumerate(ports))
    procs: list[subprocess.Popen[str]] = []

    def spawn(args: list[str]) -> None:
        env = dict(os.environ, LONGBOW_LOG="error")
        procs.append(subprocess.Popen([str(_binary()), *args], stdout=subprocess.DEVNULL, text=True, env=env))

    try:
        for i, (data, meta, internal) in enumerate(ports):
            args = ["coordinator", "--node-id", str(i + 1), "--peers", peers, "--http-port", "0"]
            args += ["--data-port", str(data), "--meta-port", str(meta), "--internal-port", str(internal)]
            args += ["--data-dir", str(tmp_path / f"coordinator-{i + 1}"), "--node-failure-timeout-ms", "500"]
            spawn(args)
        internals = ",".join(f"127.0.0.1:{internal}" for _, _, internal in ports)
        shard = ["shard", "--listen", "127.0.0.1:0", "--http-port", "0", "--coordinator", internals]
        spawn([*shard, "--data-dir", str(tmp_path / "shard")])
        yield procs, [("127.0.0.1", data, meta) for data, meta, _ in ports]
    finally:
        for p in procs:
            _stop(p)


def test_a_client_outlives_the_kill_of_its_coordinator_and_loses_no_acknowledged_row(
    group: tuple[list[subprocess.Popen[str]], list[tuple[str, int, int]]],
) -> None:
    procs, addresses = group
    deadline = time.monotonic() + 60
    with LongbowClient(coordinators=addresses, retries=8, timeout=5) as probe:
        while True:  # the group elects a leader and the shard node registers
            try:
                status = probe.cluster_status()
                leader = status["coordinator"]["raft_leader"]
                if leader is not None and any(n["live"] for n in status["shard_nodes"]):
                    break
            except LongbowConnectionError:
                pass
            assert time.monotonic() < deadline, "a leader and a live shard node within 60 s"
            time.sleep(0.2)
    # The client starts at the catalog leader: the hardest one to lose.
    at = leader - 1
    with LongbowClient(coordinators=addresses[at:] + addresses[:at], retries=8, timeout=5) as client:
        client.create_namespace("failover", 8, shards=2)
        vectors = np.random.default_rng(3).normal(size=(600, 8)).astype("float32")
        assert client.insert("failover", vectors[:300], ids=np.arange(300)) == 300

        assert client._at == 0
        procs[at].kill()  # SIGKILL the coordinator the client is using, the leader
        procs[at].wait()

        assert client.insert("failover", vectors[300:], ids=np.arange(300, 600)) == 300
        assert client._at != 0
        client.wait_until_ready("failover", timeout=30)
        hits = client.search("failover", vectors[450], k=1)
        assert hits[0].id == 450
        # A catalog change waits for a leader among the other two; a create is not resent
        # once it reached a coordinator, so wait for the election first.
        while client.cluster_status()["coordinator"]["raft_leader"] in (None, leader):
            assert time.monotonic() < deadline + 30, "a new catalog leader within 30 s"
            time.sleep(0.1)
        client.create_namespace("failover_after", 8)
        assert {"failover", "failover_after"} <= {ns.name for ns in client.list_namespaces()}
        assert len(client.get("failover", list(range(600)), include_vectors=False)) == 600


def test_a_retryable_failure_is_tried_retries_plus_one_times_and_a_refusal_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(time, "sleep", lambda _s: None)  # the backoff, not under test
    data, meta = _free_ports(2)
    with LongbowClient("127.0.0.1", data, meta, retries=3) as client:
        attempts: list[int] = []

        def raising(error: Exception) -> Callable[[object], None]:
            def call(_conn: object) -> None:
                attempts.append(1)
                raise error

            return call

        failing = raising(LongbowConnectionError("gone"))
        with pytest.raises(LongbowConnectionError):
            client._call(failing)
        assert len(attempts) == 4, "the first attempt and three retries"

        attempts.clear()
        with pytest.raises(LongbowValidationError):
            client._call(raising(LongbowValidationError("bad")))
        assert len(attempts) == 1, "a non-retryable error is not sent again"

        attempts.clear()
        with pytest.raises(LongbowConnectionError):
            client._call(failing, idempotent=False)
        assert len(attempts) == 1, "a call that may have been applied is not resent"
