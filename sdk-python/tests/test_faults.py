"""The SDK against real processes (`longbow coordinator`, two `longbow shard`) with faults
injected: a shard node killed with SIGKILL and brought back while an insert is retrying
(every row ends up stored exactly once), and a shard node stopped with SIGSTOP (a search
fails with a retryable deadline error, or answers from the other shard when partial results
are allowed, flagged as partial)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import _binary

from longbow import LongbowClient, LongbowConnectionError


def _spawn(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [str(_binary()), *args], stdout=subprocess.PIPE, text=True, env=dict(os.environ, LONGBOW_LOG="error")
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline()


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, object]]:
    ports = ["--data-port", "0", "--meta-port", "0", "--internal-port", "0", "--http-port", "0"]
    coord, line = _spawn(
        [
            "coordinator",
            *ports,
            "--request-timeout-secs",
            "2",
            "--node-failure-timeout-ms",
            "500",
            "--data-dir",
            str(tmp_path / "coordinator"),
        ]
    )
    words = line.split()
    internal = words[words.index("internal") + 1]
    shard_args = ["shard", "--listen", "127.0.0.1:0", "--http-port", "0", "--coordinator", internal]
    procs = {"a": _spawn([*shard_args, "--data-dir", str(tmp_path / "a")])[0]}
    procs["b"] = _spawn([*shard_args, "--data-dir", str(tmp_path / "b")])[0]
    state: dict[str, object] = {
        "host": "127.0.0.1",
        "data": int(words[words.index("data") + 1].rsplit(":", 1)[1]),
        "meta": int(words[words.index("meta") + 1].rsplit(":", 1)[1]),
        "procs": procs,
        "restart_b": lambda: _spawn([*shard_args, "--data-dir", str(tmp_path / "b")])[0],
    }
    yield state
    for p in procs.values():
        _stop(p)
    _stop(coord)


def _client(cluster: dict[str, object], retries: int) -> LongbowClient:
    """A client to the cluster, once both shard nodes are live."""
    host, data, meta = str(cluster["host"]), str(cluster["data"]), str(cluster["meta"])
    client = LongbowClient(host, int(data), int(meta), retries=retries)
    deadline = time.monotonic() + 30
    while sum(1 for n in client.cluster_status()["shard_nodes"] if n["live"]) < 2:
        assert time.monotonic() < deadline, "two live shard nodes"
        time.sleep(0.1)
    return client


def test_an_insert_outlives_a_shard_node_restart_and_stores_every_row_once(
    cluster: dict[str, object],
) -> None:
    procs: dict[str, subprocess.Popen[str]] = cluster["procs"]  # type: ignore[assignment]
    with _client(cluster, retries=12) as client:
        client.create_namespace("retry", 8, shards=2)
        vectors = np.random.default_rng(1).normal(size=(4000, 8)).astype("float32")
        assert client.insert("retry", vectors[:1000], ids=np.arange(1000)) == 1000

        procs["b"].kill()  # SIGKILL: the next batches half-fail until it is back
        procs["b"].wait()
        restarted: list[subprocess.Popen[str]] = []

        def bring_back() -> None:
            time.sleep(1.5)
            restarted.append(cluster["restart_b"]())  # type: ignore[operator]

        t = threading.Thread(target=bring_back)
        t.start()
        rows = client.insert("retry", vectors[1000:], ids=np.arange(1000, 4000), batch_size=500)
        t.join(timeout=60)
        procs["b"] = restarted[0]
        assert rows == 3000
        assert client.get_info("retry").count == 4000
        assert len(client.get("retry", list(range(4000)), include_vectors=False)) == 4000


def test_a_stopped_shard_node_is_not_waited_on_it_is_a_fast_retryable_error_or_a_flagged_partial_answer(
    cluster: dict[str, object],
) -> None:
    procs: dict[str, subprocess.Popen[str]] = cluster["procs"]  # type: ignore[assignment]
    with _client(cluster, retries=0) as client:
        client.create_namespace("stopped", 8, shards=2)
        vectors = np.random.default_rng(2).normal(size=(400, 8)).astype("float32")
        client.insert("stopped", vectors, ids=np.arange(400))
        client.wait_until_ready("stopped", timeout=30)
        procs["b"].send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(LongbowConnectionError) as info:
                client.search("stopped", vectors[0], k=5)
            # Not the 2 s request deadline: the coordinator stops waiting once the node misses
            # its heartbeats (500 ms here).
            assert time.monotonic() - started < 1.9
            assert info.value.retryable and info.value.code == "unavailable", info.value
            partial = client.search("stopped", vectors[:3], k=5, output="arrow", allow_partial=True)
            md = partial.schema.metadata or {}
            assert md.get(b"longbow.partial") == b"true" and md.get(b"longbow.missing_shards") == b"1"
            assert 0 < partial.num_rows <= 15
        finally:
            procs["b"].send_signal(signal.SIGCONT)
        # The node counts as live again at its next heartbeat: until then the error above.
        deadline = time.monotonic() + 10
        while True:
            try:
                assert len(client.search("stopped", vectors[0], k=5)) == 5
                break
            except LongbowConnectionError as e:
                assert e.retryable and time.monotonic() < deadline, e
                time.sleep(0.1)
