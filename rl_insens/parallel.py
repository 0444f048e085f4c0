"""Running independent tasks here, in a local process pool, or on a Ray cluster.

A task is a picklable call ``fn(item)`` that depends on nothing but its item, so every backend
gives the same results; they are yielded as they finish, so callers can save each at once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

BACKENDS = ("process", "ray")


def check_backend(backend: str) -> None:
    """A one-line ``ValueError`` for a backend not in ``BACKENDS``; called before any work starts."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def run_unordered(fn: Callable[[Any], Any], items: Sequence[Any], workers: int = 1, backend: str = "process",
                  address: str | None = None) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, fn(items[index]))`` as each task finishes.

    ``process``: in this process when ``workers <= 1``, else a pool of fresh (spawned) worker
    processes. ``ray``: Ray tasks of one CPU each, on the cluster at ``address`` or, without
    one, on a local Ray instance of ``workers`` CPUs started (and stopped) here.

    The first task to fail raises here at once and the others are cancelled; so does an
    interruption. Worker processes never outlive this call, nor a killed parent.
    """
    check_backend(backend)
    if backend == "ray":
        yield from _run_ray(fn, items, workers, address)
    elif workers <= 1:
        for index, item in enumerate(items):
            yield index, fn(item)
    else:
        import multiprocessing
        from functools import partial

        pool = multiprocessing.get_context("spawn").Pool(workers, _die_with_parent, (os.getpid(),))
        try:
            yield from pool.imap_unordered(partial(_indexed, fn), enumerate(items))
            pool.close()
        finally:
            pool.terminate()  # on a failure, Ctrl-C or an abandoned loop: stop the running tasks too
            pool.join()


def _indexed(fn: Callable[[Any], Any], indexed_item: tuple[int, Any]) -> tuple[int, Any]:
    index, item = indexed_item
    return index, fn(item)


def _die_with_parent(parent: int) -> None:
    """In each worker: exit as soon as the parent process is gone (killed, say), rather than
    play on for minutes."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _call(fn: Callable[[Any], Any], item: Any) -> Any:
    return fn(item)


def _run_ray(fn, items, workers: int, address: str | None) -> Iterator[tuple[int, Any]]:
    try:
        import ray
    except ImportError as error:
        raise ImportError("the ray backend needs Ray: pip install 'rl-insens[ray]'") from error
    started = not ray.is_initialized()
    if started:
        local = {} if address else {"num_cpus": max(workers, 1)}
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **local)
    try:
        remote = ray.remote(num_cpus=1)(_call)
        fn_ref = ray.put(fn)
        pending = {remote.remote(fn_ref, item): index for index, item in enumerate(items)}
        while pending:
            finished, _ = ray.wait(list(pending), num_returns=1)
            for ref in finished:
                yield pending.pop(ref), ray.get(ref)
    finally:
        if started:
            ray.shutdown()
