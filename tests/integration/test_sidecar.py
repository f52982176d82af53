"""The sidecar as a real process on loopback, driven by SidecarTransform and sealed raw lines.

The attacks on it (no key, wrong key, replays, names outside the job, planted
outputs) are in tests/security/test_sidecar_auth.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port

from buzon.transform import (
    Chain,
    HealthOk,
    HealthRequest,
    SidecarTransform,
    TransformError,
    TransformRequest,
    build_transforms,
    health,
)
from buzon.transform.auth import REQUEST_CONTEXT, new_nonce, reply_context, seal, unseal
from buzon.transform.wire import Stamp, encode_request

MESSAGE = (
    b"Subject: hi\r\n"
    b"From: a@example.org\r\n"
    b"\r\n"
    b"body line 1\r\n"
    b"body line 2 caf\xc3\xa9\r\n"
)
TAC_MESSAGE = (
    b"body line 2 caf\xc3\xa9\r\n"
    b"body line 1\r\n"
    b"\r\n"
    b"From: a@example.org\r\n"
    b"Subject: hi\r\n"
)


KEY = bytes(range(32))


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUZON_SIDECAR_")}
    env.update(extra)
    return env


@dataclass
class Sidecar:
    """A running ``python -m buzon.transform.sidecar`` and its spool."""

    proc: subprocess.Popen[bytes]
    port: int
    root: Path
    log: Path

    @property
    def work(self) -> Path:
        return self.root / "w0"

    def transform(self, timeout: float = 10.0) -> SidecarTransform:
        return SidecarTransform("127.0.0.1", self.port, self.root, timeout, key=KEY)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def logged(self, text: str, within: float = 5.0) -> bool:
        """Whether ``text`` shows up in the log (written just after the answer)."""
        deadline = time.monotonic() + within
        while text not in self.output():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def _wait_healthy(sidecar: Sidecar, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if sidecar.proc.poll() is not None:
            raise AssertionError(f"sidecar exited {sidecar.proc.returncode}:\n{sidecar.output()}")
        try:
            asyncio.run(health("127.0.0.1", sidecar.port, 1.0, key=KEY))
            return
        except TransformError:
            time.sleep(0.05)
    raise AssertionError(f"sidecar not healthy within {within} s:\n{sidecar.output()}")


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "sidecar.key"
    path.write_text(KEY.hex() + "\n")
    return path


@pytest.fixture
def start_sidecar(tmp_path: Path, key_file: Path) -> Iterator[Callable[..., Sidecar]]:
    """Factory: start a sidecar on a free loopback port; every one is stopped at teardown."""
    started: list[Sidecar] = []

    def factory(*command: str, flags: tuple[str, ...] = (), env: dict[str, str] | None = None,
                root: Path | None = None) -> Sidecar:
        root = root or tmp_path / "work"
        (root / "w0").mkdir(parents=True, exist_ok=True)
        port = free_port()
        log = tmp_path / f"sidecar-{port}.log"
        argv = [sys.executable, "-m", "buzon.transform.sidecar", "--listen", "127.0.0.1",
                "--port", str(port), "--root", str(root), "--key-file", str(key_file), *flags]
        if command:
            argv += ["--", *command]
        with open(log, "wb") as sink:
            proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT,
                                    env=_clean_env(**(env or {})))
        sidecar = Sidecar(proc, port, root, log)
        started.append(sidecar)
        _wait_healthy(sidecar)
        return sidecar

    yield factory
    for sidecar in started:
        sidecar.stop()


def _sealed(request: object) -> tuple[bytes, str]:
    """A request line sealed with the test key, and its nonce."""
    nonce = new_nonce()
    line = encode_request(request, Stamp(int(time.time()), nonce))  # type: ignore[arg-type]
    return seal(KEY, REQUEST_CONTEXT, line), nonce


def _raw(port: int, data: bytes) -> bytes:
    """Send raw bytes and EOF, read the answer until the sidecar closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)  # EOF: the sidecar must not wait for more
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def _run_failing(transform: Any, src: Path, dst: Path) -> TransformError:
    with pytest.raises(TransformError) as caught:
        asyncio.run(transform.run(src, dst))
    assert not dst.exists()
    return caught.value


# --------------------------------------------------------------------------- success


def test_tac_through_the_sidecar_is_byte_exact(start_sidecar: Callable[..., Sidecar]) -> None:
    sidecar = start_sidecar("tac")
    src, dst = sidecar.work / "A.in", sidecar.work / "A.out"
    src.write_bytes(MESSAGE)
    asyncio.run(sidecar.transform().run(src, dst))
    assert dst.read_bytes() == TAC_MESSAGE
    assert sorted(p.name for p in sidecar.work.iterdir()) == ["A.in", "A.out"]
    src.write_bytes(b"x\r\ny")  # a last line without its newline
    dst.unlink()  # a sidecar never replaces a file
    asyncio.run(sidecar.transform().run(src, dst))
    assert dst.read_bytes() == b"yx\r\n"
    assert sidecar.logged("transform w0/A.in -> w0/A.out ok 4 bytes"), sidecar.output()


def test_health_reports_command_and_load(start_sidecar: Callable[..., Sidecar]) -> None:
    sidecar = start_sidecar("tr", "a-z", "A-Z", flags=("--concurrency", "3"))
    reply = asyncio.run(health("127.0.0.1", sidecar.port, 5, key=KEY))
    assert reply == HealthOk(("tr", "a-z", "A-Z"), busy=0, limit=3, queued=0)
    line, nonce = _sealed(HealthRequest())
    answer = _raw(sidecar.port, line)
    unseal(KEY, reply_context(nonce), answer)
    assert answer.startswith(
        b'{"v":2,"status":"ok","command":["tr","a-z","A-Z"],"busy":0,"limit":3,"queued":0,'
        b'"mac":"'
    )


def test_health_command_line_mode(start_sidecar: Callable[..., Sidecar], key_file: Path,
                                  tmp_path: Path) -> None:
    sidecar = start_sidecar("tac")
    argv = [sys.executable, "-m", "buzon.transform.sidecar", "--health", f"127.0.0.1:{sidecar.port}"]
    env = _clean_env(BUZON_SIDECAR_KEY_FILE=str(key_file))  # as in the containers
    ok = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30, env=env)
    assert (ok.returncode, ok.stdout) == (0, "ok: tac (busy 0/4, queued 0)\n")
    other = tmp_path / "other.key"
    other.write_text("ab" * 32)
    wrong = subprocess.run([*argv, "--key-file", str(other)], check=False, capture_output=True,
                           text=True, timeout=30, env=env)
    assert wrong.returncode == 1
    assert "unhealthy: auth: sidecar 127.0.0.1:" in wrong.stderr
    assert "refused the request: MAC does not verify" in wrong.stderr
    keyless = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30,
                             env=_clean_env())
    assert keyless.returncode == 2 and "BUZON_SIDECAR_KEY_FILE" in keyless.stderr
    sidecar.stop()
    down = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30, env=env)
    assert down.returncode == 1
    assert down.stderr.startswith("unhealthy: down: sidecar 127.0.0.1:")


def test_command_and_settings_from_the_environment(
    start_sidecar: Callable[..., Sidecar],
) -> None:
    sidecar = start_sidecar(env={"BUZON_SIDECAR_COMMAND": "tr a-z A-Z",
                                 "BUZON_SIDECAR_CONCURRENCY": "2"})
    assert asyncio.run(health("127.0.0.1", sidecar.port, 5, key=KEY)).limit == 2
    src, dst = sidecar.work / "E.in", sidecar.work / "E.out"
    src.write_bytes(b"Hello\r\n")
    asyncio.run(sidecar.transform().run(src, dst))
    assert dst.read_bytes() == b"HELLO\r\n"


def test_chain_of_two_sidecars(start_sidecar: Callable[..., Sidecar], tmp_path: Path) -> None:
    first = start_sidecar("tac")
    second = start_sidecar("tr", "a-z", "A-Z")
    chain = build_transforms(None, f"127.0.0.1:{first.port},127.0.0.1:{second.port}",
                             work_root=first.root, timeout=10, max_output=1 << 20, key=KEY)
    assert isinstance(chain, Chain)
    src, dst = first.work / "C.in", first.work / "C.out"
    src.write_bytes(MESSAGE)
    asyncio.run(chain.run(src, dst))
    assert dst.read_bytes() == TAC_MESSAGE.upper()
    assert sorted(p.name for p in first.work.iterdir()) == ["C.in", "C.out"]
    # tac twice gives back the original bytes.
    twice = build_transforms(None, f"127.0.0.1:{first.port},127.0.0.1:{first.port}",
                             work_root=first.root, timeout=10, max_output=1 << 20, key=KEY)
    assert twice is not None
    dst.unlink()
    asyncio.run(twice.run(src, dst))
    assert dst.read_bytes() == MESSAGE


# --------------------------------------------------------------------------- refusals


def test_paths_outside_the_root_are_refused(start_sidecar: Callable[..., Sidecar],
                                            tmp_path: Path) -> None:
    sidecar = start_sidecar("tac")
    secret = tmp_path / "secret"
    secret.write_bytes(b"do not read\n")
    (sidecar.work / "ESC.in").symlink_to(secret)
    (sidecar.work / "M.in").write_bytes(MESSAGE)
    cases = [
        ("../secret", "w0/M.out", b"is not a job file"),
        ("/etc/passwd", "w0/M.out", b"is not a job file"),
        ("w0/ESC.in", "w0/ESC.out", b"resolves outside the work area"),
        ("w0/M.in", "../M.out", b"is not a job file"),
        ("w0/M.in", "/tmp/M.out", b"is not a job file"),
        ("w0/M\x00.in", "w0/M.out", b"is not a job file"),
    ]
    for input_, output, message in cases:
        line, _ = _sealed(TransformRequest(input_, output))
        answer = _raw(sidecar.port, line)
        assert answer.startswith(b'{"v":2,"status":"error","kind":"path","detail":"'), answer
        assert message in answer
    assert sorted(p.name for p in sidecar.work.iterdir()) == ["ESC.in", "M.in"]
    assert not (tmp_path / "M.out").exists()
    # The client refuses on its own side too: the sidecar is never asked.
    error = _run_failing(sidecar.transform(), secret, sidecar.work / "o5.out")
    assert (error.kind, error.retryable) == ("path", False)
    assert "is not inside the work area" in error.detail


def test_missing_input_says_to_check_the_volume(start_sidecar: Callable[..., Sidecar]) -> None:
    sidecar = start_sidecar("tac")
    error = _run_failing(sidecar.transform(), sidecar.work / "gone.in", sidecar.work / "gone.out")
    assert (error.kind, error.retryable) == ("path", False)
    assert "is the volume shared" in error.detail


def test_bad_request_lines_are_answered_and_the_sidecar_keeps_serving(
    start_sidecar: Callable[..., Sidecar],
) -> None:
    sidecar = start_sidecar("tac")
    assert _raw(sidecar.port, b"hello\n").startswith(
        b'{"v":2,"status":"error","kind":"auth","detail":"request carries no MAC')
    line, nonce = _sealed(HealthRequest())
    v9 = line.replace(b'{"v":2,', b'{"v":9,')
    v9 = seal(KEY, REQUEST_CONTEXT, v9[: v9.rindex(b',"mac"')] + b"}\n")
    answer = _raw(sidecar.port, v9)
    unseal(KEY, reply_context(nonce), answer)  # an authenticated request gets a sealed answer
    assert answer.startswith(
        b'{"v":2,"status":"error","kind":"bad-request",'
        b'"detail":"Unsupported protocol version (expected \\"v\\":2, authenticated)."')
    assert _raw(sidecar.port, b'{"v":2,"op":"health","pad":"' + b"x" * 5000 + b'"}\n') == (
        b'{"v":2,"status":"error","kind":"bad-request","detail":"line longer than 4096 bytes"}\n')
    assert _raw(sidecar.port, line.rstrip(b"\n")).startswith(  # no newline, then EOF
        b'{"v":2,"status":"error","kind":"bad-request","detail":"request line not terminated')
    assert _raw(sidecar.port, b"") == b""  # a port probe gets nothing
    assert asyncio.run(health("127.0.0.1", sidecar.port, 5, key=KEY)).command == ("tac",)


# --------------------------------------------------------------------------- failures


def test_slow_program_times_out(start_sidecar: Callable[..., Sidecar]) -> None:
    sidecar = start_sidecar("sleep", "5", flags=("--timeout", "0.5"))
    src = sidecar.work / "S.in"
    src.write_bytes(MESSAGE)
    started = time.monotonic()
    error = _run_failing(sidecar.transform(timeout=10), src, sidecar.work / "S.out")
    assert time.monotonic() - started < 4.5
    assert (error.kind, error.retryable) == ("timeout", True)
    assert error.detail == f"sidecar 127.0.0.1:{sidecar.port}: sleep ran past 0.5 s; killed"
    assert not (sidecar.work / "S.out.tmp").exists()


def test_client_gives_up_on_a_sidecar_slower_than_its_own_timeout(
    start_sidecar: Callable[..., Sidecar],
) -> None:
    sidecar = start_sidecar("sleep", "5", flags=("--timeout", "30"))
    (sidecar.work / "S.in").write_bytes(MESSAGE)
    transform = SidecarTransform("127.0.0.1", sidecar.port, sidecar.root, 0.3, key=KEY,
                                 margin=0.2)
    error = _run_failing(transform, sidecar.work / "S.in", sidecar.work / "S.out")
    assert (error.kind, error.retryable) == ("timeout", True)
    assert error.detail == f"no answer from sidecar 127.0.0.1:{sidecar.port} within 0.5 s"


def test_non_zero_exit(start_sidecar: Callable[..., Sidecar]) -> None:
    sidecar = start_sidecar("false")
    (sidecar.work / "F.in").write_bytes(MESSAGE)
    error = _run_failing(sidecar.transform(), sidecar.work / "F.in", sidecar.work / "F.out")
    assert (error.kind, error.retryable) == ("exit", True)
    assert error.detail.endswith("false exited with status 1")
    assert sidecar.logged("transform w0/F.in -> w0/F.out error exit"), sidecar.output()


def test_oversized_output(start_sidecar: Callable[..., Sidecar]) -> None:
    sidecar = start_sidecar("yes", flags=("--max-output", "10000"))
    (sidecar.work / "Y.in").write_bytes(MESSAGE)
    error = _run_failing(sidecar.transform(), sidecar.work / "Y.in", sidecar.work / "Y.out")
    assert (error.kind, error.retryable) == ("oversize", False)
    assert error.detail.endswith("yes wrote more than 10000 bytes; killed")
    assert sorted(p.name for p in sidecar.work.iterdir()) == ["Y.in"]


def test_sidecar_down_is_retryable(tmp_path: Path) -> None:
    root = tmp_path / "work"
    (root / "w0").mkdir(parents=True)
    (root / "w0" / "D.in").write_bytes(MESSAGE)
    port = free_port()  # nothing listens there
    transform = SidecarTransform("127.0.0.1", port, root, 5, key=KEY)
    error = _run_failing(transform, root / "w0" / "D.in", root / "w0" / "D.out")
    assert (error.kind, error.retryable) == ("down", True)
    assert error.detail == f"sidecar 127.0.0.1:{port}: Connection refused"
    with pytest.raises(TransformError) as caught:
        asyncio.run(health("127.0.0.1", port, 5, key=KEY))
    assert caught.value.kind == "down"


def _gated(gate: Path, then: str) -> tuple[str, ...]:
    """A command that waits until ``gate`` exists, then runs ``then``: no timing races."""
    return ("sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.02; done; exec {then}")


def test_busy_when_slots_and_queue_are_full(start_sidecar: Callable[..., Sidecar],
                                            tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    sidecar = start_sidecar(*_gated(gate, "cat"), flags=("--concurrency", "1", "--queue", "1"))
    for name in "ABC":
        (sidecar.work / f"{name}.in").write_bytes(name.encode())
    transform = sidecar.transform()

    async def scenario() -> None:
        a = asyncio.create_task(transform.run(sidecar.work / "A.in", sidecar.work / "A.out"))
        await _until(sidecar.port, lambda h: h.busy == 1)
        b = asyncio.create_task(transform.run(sidecar.work / "B.in", sidecar.work / "B.out"))
        await _until(sidecar.port, lambda h: h.queued == 1)
        with pytest.raises(TransformError) as caught:
            await transform.run(sidecar.work / "C.in", sidecar.work / "C.out")
        assert (caught.value.kind, caught.value.retryable) == ("busy", True)
        assert caught.value.detail.endswith("1 running and 1 queued")
        # The same output asked for again while it is being written: busy, not a race.
        with pytest.raises(TransformError) as again:
            await transform.run(sidecar.work / "A.in", sidecar.work / "A.out")
        assert again.value.kind == "busy" and "already writing" in again.value.detail
        gate.touch()
        await asyncio.gather(a, b)

    asyncio.run(scenario())
    assert (sidecar.work / "A.out").read_bytes() == b"A"
    assert (sidecar.work / "B.out").read_bytes() == b"B"
    assert not (sidecar.work / "C.out").exists()


async def _until(port: int, condition: Callable[[HealthOk], bool], within: float = 10) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition(await health("127.0.0.1", port, 5, key=KEY)):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


# --------------------------------------------------------------------------- lifecycle


def test_sigterm_finishes_in_flight_work_then_exits_0(
    start_sidecar: Callable[..., Sidecar], tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    sidecar = start_sidecar(*_gated(gate, "tac"))
    src, dst = sidecar.work / "T.in", sidecar.work / "T.out"
    src.write_bytes(MESSAGE)

    async def scenario() -> None:
        task = asyncio.create_task(sidecar.transform().run(src, dst))
        await _until(sidecar.port, lambda h: h.busy == 1)
        sidecar.proc.send_signal(signal.SIGTERM)
        assert sidecar.logged("stopping: listeners closed, 1 request(s) in flight")
        with pytest.raises(TransformError) as refused:  # no new work once stopping
            await health("127.0.0.1", sidecar.port, 5, key=KEY)
        assert refused.value.kind == "down"
        assert sidecar.proc.poll() is None  # still finishing the request
        gate.touch()
        await task  # answered, not cut off

    asyncio.run(scenario())
    assert dst.read_bytes() == TAC_MESSAGE
    assert sidecar.proc.wait(10) == 0
    assert "buzon-sidecar stopped" in sidecar.output()


def test_sigterm_past_the_grace_period_kills_the_program(
    start_sidecar: Callable[..., Sidecar],
) -> None:
    sidecar = start_sidecar("sleep", "30", flags=("--grace", "0.5"))
    (sidecar.work / "G.in").write_bytes(MESSAGE)

    async def scenario() -> TransformError:
        task = asyncio.create_task(
            sidecar.transform().run(sidecar.work / "G.in", sidecar.work / "G.out"))
        await _until(sidecar.port, lambda h: h.busy == 1)
        sidecar.proc.send_signal(signal.SIGTERM)
        with pytest.raises(TransformError) as caught:
            await task
        return caught.value

    started = time.monotonic()
    error = asyncio.run(scenario())
    assert error.kind == "down" and error.retryable
    assert sidecar.proc.wait(10) == 0
    assert time.monotonic() - started < 8
    assert "cancelling 1 request(s) still running after 0.5 s" in sidecar.output()
    assert sorted(p.name for p in sidecar.work.iterdir()) == ["G.in"]


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--root", "R", "--", "tac"], {"BUZON_SIDECAR_CONCURRENCY": "0"},
         "BUZON_SIDECAR_CONCURRENCY: Input should be greater than or equal to 1"),
        (["--root", "R", "--port", "70000", "--", "tac"], {},
         "BUZON_SIDECAR_PORT: Input should be less than or equal to 65535"),
        (["--", "tac"], {}, "BUZON_SIDECAR_ROOT: Field required"),
        (["--root", "R"], {}, "no program"),
        (["--root", "R", "--", "no-such-program-xyz"], {}, "'no-such-program-xyz' not found"),
        (["--root", "R", "--", "tac"], {}, "BUZON_SIDECAR_KEY_FILE: no key"),
        (["--root", "R", "--key-file", "R/absent", "--", "tac"], {},
         "BUZON_SIDECAR_KEY_FILE: cannot read the key file"),
        (["--root", "R", "--", "tac"], {"BUZON_SIDECAR_MAX_SKEW": "0"},
         "BUZON_SIDECAR_MAX_SKEW: Input should be greater than or equal to 1"),
    ],
)
def test_bad_configuration_exits_2_naming_the_setting(
    tmp_path: Path, argv: list[str], env: dict[str, str], message: str
) -> None:
    argv = [a.replace("R", str(tmp_path)) if a.startswith("R") else a for a in argv]
    result = subprocess.run(
        [sys.executable, "-m", "buzon.transform.sidecar", *argv],
        check=False, capture_output=True, text=True, timeout=30, env=_clean_env(**env),
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
