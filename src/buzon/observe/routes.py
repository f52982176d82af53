"""The three paths of the observation listener, and what each answers.

* ``/metrics``: the Prometheus text exposition, read at this moment;
* ``/healthz``: ``200 ok`` whenever the process's event loop answers at all;
* ``/readyz``: ``200 ready`` when the process's ``not_ready`` check returns
  None, else ``503`` and its one-line reason. The check runs in a thread with
  a deadline, so a hung file system gives a ``503`` and never stalls the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from buzon.observe.exposition import CONTENT_TYPE, render
from buzon.observe.httpd import Answer, Request, Route, text

__all__ = ["READY_TIMEOUT", "routes"]

READY_TIMEOUT = 2.0  # seconds the readiness check may take before it counts as failed


def routes(registry: CollectorRegistry, not_ready: Callable[[], str | None]) -> dict[str, Route]:
    """``/metrics``, ``/healthz`` and ``/readyz`` over ``registry`` and ``not_ready``."""

    async def metrics(_: Request) -> Answer:
        return Answer(200, render(registry), CONTENT_TYPE)

    async def healthz(_: Request) -> Answer:
        return text(200, "ok")

    async def readyz(_: Request) -> Answer:
        try:
            reason = await asyncio.wait_for(asyncio.to_thread(not_ready), READY_TIMEOUT)
        except TimeoutError:
            reason = f"the readiness check took over {READY_TIMEOUT:g} s"
        return text(200, "ready") if reason is None else text(503, f"not ready: {reason}")

    return {"/metrics": metrics, "/healthz": healthz, "/readyz": readyz}
