"""`AsyncLongbowClient` mirrors `LongbowClient`: every public method exists on both, with the
same parameters (names, kinds and defaults), and the async one is a coroutine function."""

from __future__ import annotations

import inspect

from longbow import AsyncLongbowClient, LongbowClient


def _public(cls: type) -> dict[str, object]:
    return {
        name: fn
        for name, fn in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") or name == "__init__"
    }


def test_every_public_method_has_an_async_twin_with_the_same_parameters() -> None:
    sync, asyn = _public(LongbowClient), _public(AsyncLongbowClient)
    assert set(sync) == set(asyn), set(sync) ^ set(asyn)
    for name, fn in sync.items():
        a = inspect.signature(asyn[name])  # type: ignore[arg-type]
        s = inspect.signature(fn)  # type: ignore[arg-type]
        params = [(p.name, p.kind, p.default) for p in s.parameters.values()]
        aparams = [(p.name, p.kind, p.default) for p in a.parameters.values()]
        assert params == aparams, name
        if name != "__init__":
            assert inspect.iscoroutinefunction(asyn[name]), name
