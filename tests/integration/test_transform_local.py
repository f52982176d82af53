"""LocalCommand with real programs: byte-exact output, every failure, chains, the factory."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from buzon.transform import (
    Chain,
    LocalCommand,
    SidecarTransform,
    TransformError,
    build_transforms,
)

MESSAGE = (
    b"From: alice@example.org\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: hello\r\n"
    b"\r\n"
    b"first line\r\n"
    b"second line, 8-bit: caf\xc3\xa9\r\n"
    b"last line\r\n"
)

Runner = Callable[[Coroutine[Any, Any, Any]], Any]


def tac(data: bytes) -> bytes:
    """What GNU tac does: records end at each "\\n"; a last line without one stays bare."""
    return b"".join(reversed(re.findall(rb"[^\n]*\n|[^\n]+\Z", data)))


def _loop_params() -> list[Any]:
    params: list[Any] = ["asyncio"]
    try:
        import uvloop  # noqa: F401
    except ImportError:
        params.append(pytest.param("uvloop", marks=pytest.mark.skip(reason="no uvloop")))
    else:
        params.append("uvloop")  # the server's default loop
    return params


@pytest.fixture(params=_loop_params())
def run(request: pytest.FixtureRequest) -> Iterator[Runner]:
    """Run a coroutine to completion on a fresh loop of the parametrised kind."""
    factory = None
    if request.param == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        yield runner.run


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "spool" / "work"
    path.mkdir(parents=True)
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def _gone(pid: int, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return False


def _failure(run: Runner, transform: Any, src: Path, dst: Path) -> TransformError:
    with pytest.raises(TransformError) as caught:
        run(transform.run(src, dst))
    assert not dst.exists()
    assert not dst.with_name(dst.name + ".tmp").exists()
    return caught.value


# --------------------------------------------------------------------------- tac, byte-exact


@pytest.mark.parametrize(
    "message",
    [
        MESSAGE,
        MESSAGE + b"no newline at the end",
        b"a\nb\nc\n",
        b"only line, no newline",
        b"",
        b"\r\n\r\n\n",
        bytes(range(256)) * 4,
    ],
    ids=["crlf", "crlf-bare-last", "lf", "single-bare", "empty", "blank-lines", "binary"],
)
def test_tac_output_is_byte_exact(run: Runner, work: Path, message: bytes) -> None:
    src, dst = _write(work / "m.in", message), work / "m.out"
    run(LocalCommand(["tac"], timeout=10, max_output=1 << 20).run(src, dst))
    assert dst.read_bytes() == tac(message)
    assert sorted(p.name for p in work.iterdir()) == ["m.in", "m.out"]  # no .tmp left


def test_tac_keeps_crlf_endings_when_reversing(run: Runner, work: Path) -> None:
    src, dst = _write(work / "m.in", b"one\r\ntwo\r\nthree\r\n"), work / "m.out"
    run(LocalCommand(["tac"], 10, 1000).run(src, dst))
    assert dst.read_bytes() == b"three\r\ntwo\r\none\r\n"
    src.write_bytes(b"one\r\ntwo")  # the last line lacks its newline: tac glues it on
    run(LocalCommand(["tac"], 10, 1000).run(src, dst))
    assert dst.read_bytes() == b"twoone\r\n"


def test_large_message_is_copied_in_full(run: Runner, work: Path) -> None:
    message = b"".join(b"line %06d %s\r\n" % (i, b"x" * 60) for i in range(40_000))  # ~2.9 MB
    src, dst = _write(work / "m.in", message), work / "m.out"
    run(LocalCommand(["tac"], 30, len(message)).run(src, dst))
    assert dst.read_bytes() == tac(message)


def test_an_existing_output_is_replaced_whole(run: Runner, work: Path) -> None:
    src, dst = _write(work / "m.in", b"a\nb\n"), _write(work / "m.out", b"stale" * 1000)
    run(LocalCommand(["tac"], 10, 1000).run(src, dst))
    assert dst.read_bytes() == b"b\na\n"


def test_output_of_exactly_max_output_bytes_is_accepted(run: Runner, work: Path) -> None:
    src, dst = _write(work / "m.in", b""), work / "m.out"
    run(LocalCommand(["head", "-c", "1000", "/dev/zero"], 10, 1000).run(src, dst))
    assert dst.read_bytes() == bytes(1000)
    too_big = LocalCommand(["head", "-c", "1001", "/dev/zero"], 10, 1000)
    error = _failure(run, too_big, src, work / "other.out")
    assert error.kind == "oversize"


# --------------------------------------------------------------------------- failures


def test_non_zero_exit_is_a_retryable_exit_error(run: Runner, work: Path) -> None:
    src = _write(work / "m.in", MESSAGE)
    error = _failure(run, LocalCommand(["false"], 10, 1000), src, work / "m.out")
    assert (error.kind, error.retryable) == ("exit", True)
    assert error.detail == "false exited with status 1"


def test_exit_error_quotes_the_start_of_stderr(run: Runner, work: Path) -> None:
    src = _write(work / "m.in", MESSAGE)
    script = ("echo 'spamd: connection\nrefused' >&2; "
              "head -c 5000 /dev/zero | tr '\\0' E >&2; exit 75")
    error = _failure(run, LocalCommand(["sh", "-c", script], 10, 1000), src, work / "m.out")
    assert error.kind == "exit"
    assert error.detail.startswith("sh exited with status 75: spamd: connection refused EEE")
    assert len(error.detail) < 400  # only the first bytes of stderr


def test_death_by_signal_is_an_exit_error(run: Runner, work: Path) -> None:
    src = _write(work / "m.in", MESSAGE)
    error = _failure(run, LocalCommand(["sh", "-c", "kill -9 $$"], 10, 1000), src, work / "m.out")
    assert (error.kind, error.detail) == ("exit", "sh killed by signal SIGKILL")


def test_timeout_kills_the_program_and_what_it_forked(run: Runner, work: Path) -> None:
    src, pids = _write(work / "m.in", MESSAGE), work / "pids"
    # The shell and a background grandchild both hold stdout open.
    script = f"sleep 30 & echo $$ $! > {pids}; wait"
    started = time.monotonic()
    error = _failure(run, LocalCommand(["sh", "-c", script], 1.0, 1000), src, work / "m.out")
    assert time.monotonic() - started < 5
    assert (error.kind, error.retryable) == ("timeout", True)
    assert error.detail == "sh ran past 1 s; killed"
    for pid in map(int, pids.read_text().split()):
        assert _gone(pid), f"pid {pid} survived the timeout"


def test_sleep_past_timeout(run: Runner, work: Path) -> None:
    src = _write(work / "m.in", MESSAGE)
    started = time.monotonic()
    error = _failure(run, LocalCommand(["sleep", "5"], 0.3, 1000), src, work / "m.out")
    assert error.kind == "timeout"
    assert time.monotonic() - started < 4


def test_oversized_output_kills_the_program(run: Runner, work: Path) -> None:
    src = _write(work / "m.in", MESSAGE)
    started = time.monotonic()
    error = _failure(run, LocalCommand(["yes"], 10, 100_000), src, work / "m.out")
    assert (error.kind, error.retryable) == ("oversize", False)
    assert error.detail == "yes wrote more than 100000 bytes; killed"
    assert time.monotonic() - started < 5  # killed at once, not at the timeout


def test_program_not_found_is_a_clear_permanent_error(run: Runner, work: Path) -> None:
    src = _write(work / "m.in", MESSAGE)
    error = _failure(run, LocalCommand(["no-such-transform-xyz"], 10, 1000), src, work / "m.out")
    assert (error.kind, error.retryable) == ("spawn", False)
    assert error.detail == "program not found: 'no-such-transform-xyz'"
    assert str(error) == "spawn: program not found: 'no-such-transform-xyz'"


def test_program_not_executable(run: Runner, work: Path) -> None:
    src, script = _write(work / "m.in", MESSAGE), _write(work / "script", b"#!/bin/sh\ntac\n")
    error = _failure(run, LocalCommand([str(script)], 10, 1000), src, work / "m.out")
    assert error.kind == "spawn"
    assert "not executable" in error.detail


def test_missing_input_is_an_internal_error(run: Runner, work: Path) -> None:
    error = _failure(run, LocalCommand(["tac"], 10, 1000), work / "absent.in", work / "m.out")
    assert (error.kind, error.retryable) == ("internal", True)
    assert "absent.in" in error.detail


def test_cancelling_a_run_kills_the_program(run: Runner, work: Path) -> None:
    src, pidfile, dst = _write(work / "m.in", MESSAGE), work / "pid", work / "m.out"

    async def scenario() -> None:
        transform = LocalCommand(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 30"], 60, 1000)
        task = asyncio.create_task(transform.run(src, dst))
        while not pidfile.exists() or not pidfile.read_text().strip():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario())
    assert _gone(int(pidfile.read_text()))
    assert not dst.exists() and not dst.with_name("m.out.tmp").exists()


# --------------------------------------------------------------------------- chains


def test_chain_runs_in_order_and_cleans_up(run: Runner, work: Path) -> None:
    src, dst = _write(work / "m.in", b"abc\ndef\n"), work / "m.out"
    chain = build_transforms("tac | rev", None, work_root=work.parent, timeout=10,
                             max_output=1000)
    assert isinstance(chain, Chain)
    run(chain.run(src, dst))
    assert dst.read_bytes() == b"fed\ncba\n"
    assert sorted(p.name for p in work.iterdir()) == ["m.in", "m.out"]


def test_chain_of_tac_twice_gives_back_the_original(run: Runner, work: Path) -> None:
    src, dst = _write(work / "m.in", MESSAGE), work / "m.out"
    run(Chain([LocalCommand(["tac"], 10, 10_000), LocalCommand(["tac"], 10, 10_000)]).run(src, dst))
    assert dst.read_bytes() == MESSAGE


def test_chain_failure_names_the_stage_and_cleans_up(run: Runner, work: Path) -> None:
    src = _write(work / "m.in", MESSAGE)
    chain = build_transforms("tac | false | rev", None, work_root=work.parent, timeout=10,
                             max_output=10_000)
    error = _failure(run, chain, src, work / "m.out")
    assert (error.kind, error.retryable) == ("exit", True)
    assert error.detail == "stage 2/3 LocalCommand('false'): false exited with status 1"
    assert sorted(p.name for p in work.iterdir()) == ["m.in"]


# --------------------------------------------------------------------------- configuration


def test_build_transforms_from_settings(tmp_path: Path) -> None:
    kw: dict[str, Any] = {"work_root": tmp_path, "timeout": 7.0, "max_output": 99}
    assert build_transforms(None, None, **kw) is None
    assert build_transforms("  ", "", **kw) is None
    one = build_transforms("tac", None, **kw)
    assert isinstance(one, LocalCommand)
    assert (one.argv, one.timeout, one.max_output) == (["tac"], 7.0, 99)
    quoted = build_transforms("tr '|' x | sed 's/a b/c/'", None, **kw)
    assert isinstance(quoted, Chain)
    assert [t.argv for t in quoted.transforms] == [["tr", "|", "x"], ["sed", "s/a b/c/"]]
    escaped = build_transforms("tr \\| x", None, **kw)
    assert isinstance(escaped, LocalCommand) and escaped.argv == ["tr", "|", "x"]


def test_sidecars_win_over_a_local_program(tmp_path: Path) -> None:
    kw: dict[str, Any] = {"work_root": tmp_path, "timeout": 5.0, "max_output": 99,
                          "key": bytes(32)}
    single = build_transforms("tac", "transform-tac:7000", **kw)
    assert isinstance(single, SidecarTransform)
    assert (single.host, single.port, single.work_root, single.timeout) == (
        "transform-tac", 7000, tmp_path, 5.0)
    chain = build_transforms(None, "a:1, [::1]:7000 ,", **kw)
    assert isinstance(chain, Chain)
    assert [(t.host, t.port) for t in chain.transforms] == [("a", 1), ("::1", 7000)]
    assert repr(chain) == "Chain(SidecarTransform('a:1') | SidecarTransform('[::1]:7000'))"


def test_sidecars_need_the_key_a_local_program_does_not(tmp_path: Path) -> None:
    kw: dict[str, Any] = {"work_root": tmp_path, "timeout": 5.0, "max_output": 99}
    with pytest.raises(ValueError, match="sidecars need the deployment key"):
        build_transforms(None, "transform-tac:7000", **kw)
    assert isinstance(build_transforms("tac", None, **kw), LocalCommand)


@pytest.mark.parametrize("spec", ["tac |", "| tac", "tac || rev", "tr 'x", "a | | b"])
def test_build_transforms_refuses_malformed_programs(tmp_path: Path, spec: str) -> None:
    with pytest.raises(ValueError):
        build_transforms(spec, None, work_root=tmp_path, timeout=1, max_output=1)
