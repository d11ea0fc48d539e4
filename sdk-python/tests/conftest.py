"""Fixtures: build and start the real `longbow local` on free ports in a temp directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from longbow import LongbowClient

REPO = Path(__file__).resolve().parents[2]


def _binary() -> Path:
    explicit = os.environ.get("LONGBOW_BIN")
    if explicit:
        return Path(explicit)
    subprocess.run(
        ["cargo", "build", "--bin", "longbow"],
        cwd=REPO,
        check=True,
        env=dict(os.environ, CARGO_BUILD_JOBS=os.environ.get("CARGO_BUILD_JOBS", "2")),
    )
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return Path(json.loads(meta)["target_directory"]) / "debug" / "longbow"


class Server:
    def __init__(self, proc: subprocess.Popen[str], data: str, meta: str) -> None:
        self.proc = proc
        self.host, data_port = data.removeprefix("grpc://").rsplit(":", 1)
        self.data_port = int(data_port)
        self.meta_port = int(meta.removeprefix("grpc://").rsplit(":", 1)[1])

    def client(self, **kwargs: object) -> LongbowClient:
        return LongbowClient(self.host, self.data_port, self.meta_port, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("longbow")
    proc = subprocess.Popen(
        [
            str(_binary()),
            "local",
            "--data-dir",
            str(data_dir),
            "--shards",
            "2",
            "--data-port",
            "0",
            "--meta-port",
            "0",
            "--http-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, LONGBOW_LOG="warn"),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    words = line.split()
    try:
        srv = Server(proc, words[words.index("data") + 1], words[words.index("meta") + 1])
    except ValueError:
        proc.kill()
        raise RuntimeError(f"longbow local did not start: {line!r}") from None
    yield srv
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.fixture
def client(server: Server) -> Iterator[LongbowClient]:
    with server.client() as c:
        yield c
