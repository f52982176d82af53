"""Issue 11, finding 5: a connection over the limit gets 421 on both event loops.

Before: ``_Busy`` asserted that its transport was an ``asyncio.WriteTransport``;
uvloop's (the default loop) is not a subclass, so the client got a silent close
and the log a traceback per connection. Each loop runs here as a real
``python -m buzon`` process with one session slot.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import LineClient, free_port, server_process, wait_for


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_over_the_limit_gets_421_and_the_log_no_traceback(tmp_path: Path, loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")  # else the server falls back to asyncio's loop
    env = {"BUZON_EVENT_LOOP": loop, "BUZON_MAX_CONNECTIONS": "1"}
    with server_process(tmp_path / "data", free_port(), env=env) as proc:
        holder: list[LineClient] = []

        def hold_the_slot() -> bool:  # the start-up probe may still hold it a moment
            c = LineClient(proc.port)
            if c.reply().startswith("220"):
                holder.append(c)
                return True
            c.close()
            return False

        assert wait_for(hold_the_slot, 10)
        try:
            for _ in range(3):
                with LineClient(proc.port) as over:
                    assert over.reply() == (
                        "421 4.3.2 mx.test Error: too many connections, try again later")
                    assert over.closed()
        finally:
            holder[0].close()
        assert proc.terminate() == 0
    log = proc.log.read_text()
    assert "Traceback" not in log and "AssertionError" not in log, log[-2000:]
    assert "buzon stopped" in log

