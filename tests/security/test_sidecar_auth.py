"""Finding 1 (issue 11): a transform sidecar acted on any request from anyone.

Each test speaks the wire protocol to a real ``buzon-sidecar`` process on
127.0.0.1 as a stranger would: raw bytes on a socket, requests sealed (or not)
here with :mod:`hmac` exactly as docs/protocol.md describes, never with the
package's own client. The sidecar runs ``tac`` on a work area in a temporary
directory; every test checks what it answered and which files exist after.

Before the fix the sidecar carried out the version-1 request of anyone who could
connect, with any names under its root (``queue/`` included), replacing files.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port, listening, wait_for

KEY = secrets.token_bytes(32)
MESSAGE = b"Subject: hi\r\n\r\nfirst\r\nsecond\r\n"
REVERSED = b"second\r\nfirst\r\n\r\nSubject: hi\r\n"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUZON_")}
    return {**env, **extra}


def _seal(key: bytes, context: bytes, fields: dict[str, Any]) -> bytes:
    """A sealed line, per docs/protocol.md: the MAC of every byte before ,"mac":"."""
    body = json.dumps(fields, separators=(",", ":")).encode()[:-1]  # without the "}"
    tag = hmac.new(key, context + body, hashlib.sha256).hexdigest().encode()
    return body + b',"mac":"' + tag + b'"}\n'


def request(op: str = "transform", key: bytes = KEY, *, ts: int | None = None,
            nonce: str | None = None, **names: str) -> tuple[bytes, str]:
    nonce = nonce or secrets.token_hex(16)
    fields: dict[str, Any] = {"v": 2, "op": op, "ts": int(time.time()) if ts is None else ts,
                              "nonce": nonce, **names}
    return _seal(key, b"buzon-sidecar-v2 request\n", fields), nonce


@dataclass
class Sidecar:
    proc: subprocess.Popen[bytes]
    port: int
    root: Path
    log: Path

    def send(self, data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        return answer

    def ask(self, data: bytes) -> dict[str, Any]:
        answer = self.send(data)
        assert answer.endswith(b"\n") and answer.count(b"\n") == 1, answer
        return dict(json.loads(answer))

    def files(self) -> dict[str, bytes]:
        return {str(p.relative_to(self.root)): p.read_bytes()
                for p in sorted(self.root.rglob("*")) if p.is_file()}



@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[Sidecar]:
    root = tmp_path / "work"
    (root / "w0").mkdir(parents=True)
    key_file = tmp_path / "sidecar.key"
    key_file.write_text(KEY.hex() + "\n")
    port = free_port()
    log = tmp_path / "sidecar.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "buzon.transform.sidecar", "--listen", "127.0.0.1",
             "--port", str(port), "--root", str(root), "--", "tac"],
            stdout=sink, stderr=subprocess.STDOUT,
            env=_env(BUZON_SIDECAR_KEY_FILE=str(key_file)),
        )
    try:
        assert wait_for(lambda: proc.poll() is not None or listening(port)), log.read_text()
        assert proc.poll() is None, log.read_text()
        (root / "w0" / "AAAA.in").write_bytes(MESSAGE)
        yield Sidecar(proc, port, root, log)
    finally:
        proc.terminate()
        proc.wait(20)


def _v1(input_: str, output: str) -> bytes:
    """The unauthenticated request any container on the network could send before."""
    return json.dumps({"v": 1, "op": "transform", "input": input_, "output": output},
                      separators=(",", ":")).encode() + b"\n"


def _refused(reply: dict[str, Any], kind: str) -> None:
    assert (reply.get("status"), reply.get("kind")) == ("error", kind), reply


def test_a_request_without_a_mac_is_refused_and_touches_nothing(sidecar: Sidecar) -> None:
    before = sidecar.files()
    for line in (
        b'{"v":1,"op":"transform","input":"w0/AAAA.in","output":"w0/AAAA.out"}\n',
        b'{"v":2,"op":"transform","ts":%d,"nonce":"%s","input":"w0/AAAA.in",'
        b'"output":"w0/AAAA.out"}\n' % (int(time.time()), secrets.token_hex(16).encode()),
        b'{"v":1,"op":"health"}\n',
    ):
        reply = sidecar.ask(line)
        _refused(reply, "auth")
        assert "mac" not in reply  # nothing sealed for a stranger
    assert sidecar.files() == before


def test_a_request_sealed_with_another_key_is_refused(sidecar: Sidecar) -> None:
    before = sidecar.files()
    line, _ = request(key=secrets.token_bytes(32), input="w0/AAAA.in", output="w0/AAAA.out")
    reply = sidecar.ask(line)
    _refused(reply, "auth")
    assert "is the key the same" in reply["detail"]
    # One byte changed in a correctly sealed request: refused too.
    line, _ = request(input="w0/AAAA.in", output="w0/AAAA.out")
    _refused(sidecar.ask(line.replace(b"AAAA.out", b"AAAB.out")), "auth")
    assert sidecar.files() == before


def test_a_sealed_request_works_and_its_reply_is_sealed_to_it(sidecar: Sidecar) -> None:
    line, nonce = request(input="w0/AAAA.in", output="w0/AAAA.out")
    answer = sidecar.send(line)
    reply = json.loads(answer)
    assert reply["status"] == "ok", reply
    assert (sidecar.root / "w0" / "AAAA.out").read_bytes() == REVERSED
    body, tag = answer[: answer.rindex(b',"mac":"')], reply["mac"].encode()
    context = b"buzon-sidecar-v2 reply\n" + nonce.encode() + b"\n"
    assert hmac.compare_digest(tag, hmac.new(KEY, context + body, hashlib.sha256)
                               .hexdigest().encode())


def test_a_replayed_request_is_refused(sidecar: Sidecar) -> None:
    line, _ = request(input="w0/AAAA.in", output="w0/AAAA.out")
    assert sidecar.ask(line)["status"] == "ok"
    out = sidecar.root / "w0" / "AAAA.out"
    out.unlink()
    reply = sidecar.ask(line)  # the same bytes again, as an eavesdropper would
    _refused(reply, "auth")
    assert "nonce already used" in reply["detail"]
    assert not out.exists()


def test_a_request_outside_the_time_window_is_refused(sidecar: Sidecar) -> None:
    for ts in (int(time.time()) - 3600, int(time.time()) + 3600):
        line, _ = request(ts=ts, input="w0/AAAA.in", output="w0/AAAA.out")
        reply = sidecar.ask(line)
        _refused(reply, "auth")
        assert "replayed, or clocks out of step" in reply["detail"]
    assert not (sidecar.root / "w0" / "AAAA.out").exists()


@pytest.mark.parametrize(
    ("input_", "output"),
    [
        ("queue/SEGMENT", "w0/AAAA.out"),  # read a queue segment
        ("w0/AAAA.in", "queue/SEGMENT"),  # overwrite a queue segment
        ("w0/AAAA.in", "../planted"),  # leave the work area
        ("w0/AAAA.in", "w0/BBBB.out"),  # another job's output
        ("w0/BBBB.in", "w0/AAAA.out"),  # another job's input
        ("w0/AAAA.in", "w0/AAAA.in"),  # the input itself
        ("w0/AAAA.in", "monitor.token"),
    ],
)
def test_a_request_may_name_only_one_jobs_input_and_output(
    sidecar: Sidecar, input_: str, output: str
) -> None:
    (sidecar.root / "queue").mkdir()
    (sidecar.root / "queue" / "SEGMENT").write_bytes(b"BUZON1 {}\n")
    (sidecar.root / "w0" / "BBBB.in").write_bytes(b"other job\n")
    before = sidecar.files()
    sidecar.send(_v1(input_, output))  # a stranger's request: carried out before the fix
    assert sidecar.files() == before
    line, _ = request(input=input_, output=output)  # sealed: the key alone is not enough
    _refused(sidecar.ask(line), "path")
    assert sidecar.files() == before
    assert not (sidecar.root.parent / "planted").exists()


def test_an_output_that_exists_is_never_overwritten(sidecar: Sidecar) -> None:
    planted = sidecar.root / "w0" / "AAAA.out"
    planted.write_bytes(b"planted before the request\n")
    sidecar.send(_v1("w0/AAAA.in", "w0/AAAA.out"))  # replaced it before the fix
    assert planted.read_bytes() == b"planted before the request\n"
    line, _ = request(input="w0/AAAA.in", output="w0/AAAA.out")
    reply = sidecar.ask(line)
    _refused(reply, "path")
    assert "never replaces a file" in reply["detail"]
    assert planted.read_bytes() == b"planted before the request\n"
    assert not (sidecar.root / "w0" / "AAAA.out.tmp").exists()


def test_a_sidecar_without_a_key_refuses_to_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "buzon.transform.sidecar", "--listen", "127.0.0.1",
         "--port", str(free_port()), "--root", str(tmp_path), "--", "tac"],
        capture_output=True, text=True, timeout=30, env=_env(), check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "BUZON_SIDECAR_KEY_FILE" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_server_with_sidecars_and_no_key_refuses_to_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "buzon", "-p", "0", "-P", "0", "-u", "t0k3n-ok",
         "-d", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=30, check=False,
        env=_env(BUZON_TRANSFORM_SIDECARS="127.0.0.1:7000", BUZON_SMTP_LISTEN="127.0.0.1",
                 BUZON_MONITOR_LISTEN="127.0.0.1"),
    )
    assert result.returncode == 2, result.stderr
    assert "BUZON_TRANSFORM_KEY_FILE" in result.stderr


def test_the_native_default_listen_address_is_loopback() -> None:
    from buzon.transform.sidecar_settings import SidecarSettings

    assert SidecarSettings(root=Path("/nonexistent")).listen == "127.0.0.1"
