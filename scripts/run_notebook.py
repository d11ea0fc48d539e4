"""Run a notebook against a fresh `longbow local` (free ports, a temporary data directory)
and fail on the first cell that raises. Usage: run_notebook.py LONGBOW_BIN NOTEBOOK."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile

import nbclient
import nbformat


def main(binary: str, notebook: str) -> int:
    with tempfile.TemporaryDirectory() as data_dir:
        proc = subprocess.Popen(
            [binary, "local", "--data-dir", data_dir, "--data-port", "0", "--meta-port", "0", "--http-port", "0"],
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ, LONGBOW_LOG="warn"),
        )
        try:
            assert proc.stdout is not None
            words = proc.stdout.readline().split()
            data = words[words.index("data") + 1].rsplit(":", 1)[1]
            meta = words[words.index("meta") + 1].rsplit(":", 1)[1]
            os.environ.update(LONGBOW_DATA_PORT=data, LONGBOW_META_PORT=meta, LONGBOW_HOST="127.0.0.1")
            nb = nbformat.read(notebook, as_version=4)
            nbclient.NotebookClient(nb, timeout=300, kernel_name="python3").execute()
            print(f"{notebook}: {len(nb.cells)} cells ran against longbow local")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
