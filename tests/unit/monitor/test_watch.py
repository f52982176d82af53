"""``monitor-client watch`` without a socket: the answers, the clock and the output are fakes."""

from __future__ import annotations

import io

from buzon.monitor.client_v1 import WATCHED, watch
from buzon.monitor.wire_v1 import CommandV1, ResponseV1, StatusV1


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Fake:
    """Counters that grow by 10 per refresh; a clock that advances 2 s per sleep."""

    def __init__(self) -> None:
        self.t = 100.0
        self.round = -1
        self.asked: list[CommandV1] = []

    def ask(self, command: CommandV1) -> ResponseV1:
        self.asked.append(command)
        if command is WATCHED[0]:
            self.round += 1
        return ResponseV1(1, StatusV1.OK, 10 * self.round if command is not
                          CommandV1.QUEUE_DEPTH else 3)

    def clock(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def test_one_line_per_refresh_with_rates_when_not_a_terminal() -> None:
    fake, out = Fake(), io.StringIO()
    assert watch(fake.ask, interval=2, count=3, out=out, clock=fake.clock, sleep=fake.sleep) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and fake.asked == list(WATCHED) * 3
    assert lines[0].startswith("historic=0(-) concurrent=0 bytes=0(-) mails=0(-) deliveries=0(-)")
    assert "queue=3 " in lines[0]
    assert lines[1].startswith("historic=10(5.0/s) concurrent=10 bytes=10(5.0/s)")
    assert lines[1].endswith("refused=10(5.0/s)")


def test_a_terminal_is_redrawn() -> None:
    fake, out = Fake(), Tty()
    watch(fake.ask, interval=1, count=2, out=out, clock=fake.clock, sleep=fake.sleep)
    screens = out.getvalue().split("\x1b[H\x1b[2J")[1:]
    assert len(screens) == 2
    assert "  deliveries" in screens[1] and "10.0/s" in screens[1]


def test_an_error_answer_ends_it_with_its_status(capsys) -> None:
    def ask(command: CommandV1) -> ResponseV1:
        return ResponseV1(1, StatusV1.AUTH_FAILED)

    assert watch(ask, interval=1, count=None, out=io.StringIO()) == 11
    assert capsys.readouterr().err == "Error: Auth failed\n"


def test_ctrl_c_ends_it_quietly() -> None:
    fake, out = Fake(), io.StringIO()

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    assert watch(fake.ask, interval=1, count=None, out=out, clock=fake.clock, sleep=interrupt) == 0
    assert len(out.getvalue().splitlines()) == 2  # one refresh, then the newline
