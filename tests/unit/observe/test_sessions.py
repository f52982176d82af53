"""Dashboard logins: the token check, cookies, expiry and the per-address rate limit."""

from __future__ import annotations

from buzon.observe.sessions import COOKIE, MAX_SESSIONS, Sessions

TOKEN = b"t0k3n-ok"


def make(limit: int = 3) -> Sessions:
    return Sessions(TOKEN, lifetime=600, failures_per_minute=limit)


def test_the_right_token_makes_a_session_its_cookie_finds_it_until_it_expires() -> None:
    sessions = make()
    session = sessions.login("t0k3n-ok", "10.0.0.1", now=100.0)
    assert session is not None and session.id != session.csrf and len(session.id) >= 43
    cookie = sessions.cookie(session)
    assert cookie == (f"{COOKIE}={session.id}; Path=/; HttpOnly; SameSite=Strict; Max-Age=600")
    assert sessions.find(f"other=1; {COOKIE}={session.id}", now=699.0) == session
    assert sessions.find(f"{COOKIE}={session.id}", now=700.0) is None  # expired
    assert sessions.find(f"{COOKIE}=forged", now=101.0) is None
    assert sessions.find(None, now=101.0) is None


def test_logout_ends_the_session_and_the_cookie_is_cleared() -> None:
    sessions = make()
    session = sessions.login("t0k3n-ok", "10.0.0.1", now=0.0)
    assert session is not None
    sessions.logout(session)
    assert sessions.find(f"{COOKIE}={session.id}", now=1.0) is None
    assert sessions.cookie(None).endswith("Max-Age=0")


def test_wrong_tokens_are_counted_and_limited_per_address_for_a_sliding_minute() -> None:
    sessions = make(limit=3)
    for t in (0.0, 10.0, 20.0):
        assert sessions.limited("10.0.0.1", t) == 0
        assert sessions.login("wrong-tk", "10.0.0.1", t) is None
    assert sessions.failures == 3
    assert sessions.limited("10.0.0.1", 30.0) == 30.0  # until the first failure is 60 s old
    assert sessions.limited("10.0.0.2", 30.0) == 0  # another address is not affected
    assert sessions.limited("10.0.0.1", 60.0) == 0
    assert sessions.login("t0k3n-ok", "10.0.0.1", 60.0) is not None


def test_a_token_of_another_length_or_non_ascii_is_just_wrong() -> None:
    sessions = make()
    assert sessions.login("", "p", 0.0) is None
    assert sessions.login("t0k3n-ok-and-more", "p", 0.0) is None
    assert sessions.login("t0k3n-é", "q", 0.0) is None
    assert sessions.failures == 3


def test_the_oldest_session_goes_when_too_many_live() -> None:
    sessions = make()
    first = sessions.login("t0k3n-ok", "p", 0.0)
    assert first is not None
    for _ in range(MAX_SESSIONS):
        assert sessions.login("t0k3n-ok", "p", 0.0) is not None
    assert sessions.find(f"{COOKIE}={first.id}", 1.0) is None
