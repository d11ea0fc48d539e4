"""Progress bars for long operations (`insert`, `wait_until_ready`), with `tqdm`.

A bar shows when asked (`progress=True`) and by default in notebooks; `progress=False`
never shows one. Without a bar every method is a cheap no-op.
"""

from __future__ import annotations

from typing import Any


def in_notebook() -> bool:
    """Whether the code runs in a Jupyter kernel."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class Progress:
    """A `tqdm` bar, or nothing (see the module docs for when it shows)."""

    def __init__(self, show: bool | None, total: int | None, desc: str, unit: str) -> None:
        self._bar: Any = None
        if show is None:
            show = in_notebook()
        if show:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit)

    def update(self, n: int) -> None:
        """Advance by `n`."""
        if self._bar is not None and n:
            self._bar.update(n)

    def close(self) -> None:
        """Finish the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
