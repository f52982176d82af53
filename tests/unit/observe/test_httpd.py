"""The HTTP listener without a socket: a fake transport, bytes in, the answer written."""

from __future__ import annotations

import asyncio

import pytest

from buzon.observe.httpd import (
    MAX_BODY,
    MAX_HEAD,
    Answer,
    Request,
    _HttpProtocol,
    parse_head,
    parse_request,
    post,
    text,
)


class FakeTransport:
    """Collects what the protocol writes, and whether it closed (uvicorn's MockTransport)."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = False
        self.gone = asyncio.Event()

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True
        self.gone.set()

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 5555) if name == "peername" else None


CASES = [
    (b"GET /metrics HTTP/1.1", ("GET", "/metrics")),
    (b"GET /metrics?name[]=x HTTP/1.0", ("GET", "/metrics")),
    (b"HEAD /readyz HTTP/1.1\r\nHost: x", ("HEAD", "/readyz")),
    (b"GET /metrics", 400),
    (b"GET metrics HTTP/1.1", 400),
    (b"GET /metrics SMTP/1.0", 400),
    (b"GET  /metrics HTTP/1.1", 400),
    (b"G\xffT /metrics HTTP/1.1", 400),
    (b"", 400),
]


@pytest.mark.parametrize(("head", "want"), CASES)
def test_parse_request(head: bytes, want: tuple[str, str] | int) -> None:
    got = parse_request(head)
    assert (got.status if isinstance(got, Answer) else got) == want


async def _run(data: bytes, *, byte_at_a_time: bool = False) -> FakeTransport:
    async def ok(_: Request) -> Answer:
        return text(200, "ok")

    async def broken(_: Request) -> Answer:
        raise RuntimeError("a bug")

    async def echo(request: Request) -> Answer:
        return text(200, f"{request.query}|{request.headers.get('x-a', '')}|{request.body!r}")

    tasks: set[asyncio.Task[None]] = set()
    protocol = _HttpProtocol({"/healthz": ok, "/broken": broken, "/echo": post(echo)}, tasks)
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    chunks = [data[i:i + 1] for i in range(len(data))] if byte_at_a_time else [data]
    for chunk in chunks:
        protocol.data_received(chunk)
    await asyncio.gather(*tasks)
    protocol.connection_lost(None)
    return transport


@pytest.mark.parametrize("byte_at_a_time", [False, True])
@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n", 200),
    (b"GET /nowhere HTTP/1.1\r\n\r\n", 404),
    (b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
    (b"BREW /nowhere HTTP/1.1\r\n\r\n", 404),
    (b"GET /echo HTTP/1.1\r\n\r\n", 405),
    (b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", 200),
    (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    (b"POST /echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST /echo HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1), 413),
    (b"GET /healthz HTTP/1.1\r\nno colon\r\n\r\n", 400),
    (b"nonsense\r\n\r\n", 400),
])
def test_one_request_one_answer_then_close(
    request_bytes: bytes, status: int, byte_at_a_time: bool
) -> None:
    transport = asyncio.run(_run(request_bytes, byte_at_a_time=byte_at_a_time))
    assert transport.written.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"\r\nConnection: close\r\n" in transport.written
    assert transport.closed


def test_405_names_the_allowed_methods() -> None:
    transport = asyncio.run(_run(b"DELETE /healthz HTTP/1.1\r\n\r\n"))
    assert b"\r\nAllow: GET, HEAD\r\n" in transport.written


def test_head_has_the_length_but_no_body() -> None:
    transport = asyncio.run(_run(b"HEAD /healthz HTTP/1.1\r\n\r\n"))
    assert transport.written.endswith(b"\r\nContent-Length: 3\r\nCache-Control: no-store\r\n"
                                      b"Connection: close\r\n\r\n")


def test_a_route_that_raises_is_a_500_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    transport = asyncio.run(_run(b"GET /broken HTTP/1.1\r\n\r\n"))
    assert transport.written.startswith(b"HTTP/1.1 500 ")
    assert "HTTP route failed" in caplog.text


def test_an_oversized_head_is_431_without_waiting_for_its_end() -> None:
    transport = asyncio.run(_run(b"GET /" + b"a" * MAX_HEAD))
    assert transport.written.startswith(b"HTTP/1.1 431 ")
    assert transport.closed


def test_bytes_after_the_answer_are_ignored() -> None:
    transport = asyncio.run(_run(b"GET /healthz HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n"))
    assert transport.written.count(b"HTTP/1.1 200 ") == 1


def test_a_head_never_finished_gets_408(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("buzon.observe.httpd.TIMEOUT", 0.01)

    async def main() -> FakeTransport:
        protocol = _HttpProtocol({}, set())
        transport = FakeTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        protocol.data_received(b"GET /healthz HT")
        await asyncio.wait_for(transport.gone.wait(), 5)
        return transport

    assert asyncio.run(main()).written.startswith(b"HTTP/1.1 408 ")


def test_a_post_route_gets_its_query_headers_and_whole_body() -> None:
    transport = asyncio.run(_run(
        b"POST /echo?a=1 HTTP/1.1\r\nX-A: b c \r\nContent-Length: 5\r\n\r\nhello+extra",
        byte_at_a_time=True))
    assert transport.written.endswith(b"\r\n\r\na=1|b c|b'hello'\n")


def test_parse_head_reads_header_fields_by_lower_case_name() -> None:
    got = parse_head(b"GET /x?y HTTP/1.1\r\nCookie: a=1\r\ncookie: b=2\r\nHost: h")
    assert isinstance(got, Request)
    assert (got.path, got.query, dict(got.headers)) == ("/x", "y", {"cookie": "b=2", "host": "h"})


def test_a_body_that_never_comes_gets_408(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("buzon.observe.httpd.TIMEOUT", 0.01)

    async def echo(_: Request) -> Answer:
        return text(200, "never")

    async def main() -> FakeTransport:
        protocol = _HttpProtocol({"/echo": post(echo)}, set())
        transport = FakeTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        protocol.data_received(b"POST /echo HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc")
        await asyncio.wait_for(transport.gone.wait(), 5)
        return transport

    assert asyncio.run(main()).written.startswith(b"HTTP/1.1 408 ")
