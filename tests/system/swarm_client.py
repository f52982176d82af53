"""The SMTP client of the Swarm test: runs *inside* a container on the stack's network.

Standard library only (it runs with the smtp image's Python, ``python3 -c``). Its
settings come from the environment:

``SMTP_HOST``/``SMTP_PORT``: the service name (``smtp``, a ``dnsrr`` service: every
connection resolves it again and takes the first address, and Docker's DNS rotates
them, so sessions spread over the replicas); ``RUN``: a token naming this run;
``MESSAGES``: how many to send, or 0 to send until SIGTERM; ``THREADS``; ``RATE``:
messages per second for all threads together (0: as fast as it goes);
``PER_SESSION``: messages before a session is closed and a new one opened.

Each message ``i`` is retried until a ``250`` says it is queued. Every *attempt* has
its own id ``<run>.<i>.<attempt>`` in an ``X-Swarm-Test`` header, so the test can
tell exactly which attempts reached a mailbox. How an attempt ended:

``ok``: ``250`` with a queue id (the server owns it). ``connect``: no session (the
connect failed or was refused): nothing sent. ``4xx``/``5xx`` code: the server said
no (``421`` when it is going away): not queued. ``lost``: the connection died after
``DATA`` began and before its reply: the server may or may not have queued it.
``dropped``: the connection died before ``DATA``: not queued. ``abandoned``: the
client stopped (SIGTERM) or gave up while retrying: the message was never accepted.

Progress goes to stderr (``progress <acked>``) about every 100 messages; the summary
is one JSON line on stdout at the end.
"""

import json
import os
import signal
import smtplib
import socket
import sys
import threading
import time

HOST = os.environ.get("SMTP_HOST", "smtp")
PORT = int(os.environ.get("SMTP_PORT", "2525"))
RUN = os.environ["RUN"]
MESSAGES = int(os.environ.get("MESSAGES", "0"))
THREADS = int(os.environ.get("THREADS", "8"))
RATE = float(os.environ.get("RATE", "0"))
PER_SESSION = int(os.environ.get("PER_SESSION", "100"))

lock = threading.Lock()
stop = threading.Event()
state = {"next": 0, "acked": 0, "reported": 0}
attempts = []  # [index, attempt, outcome, queue id or detail, peer]
peers = {}
started = time.monotonic()


def take():
    with lock:
        if stop.is_set() or (MESSAGES and state["next"] >= MESSAGES):
            return None
        index = state["next"]
        state["next"] += 1
        if RATE:
            due = started + index / RATE
        else:
            due = 0
    if due:
        while not stop.is_set() and time.monotonic() < due:
            stop.wait(min(0.05, max(0.0, due - time.monotonic())))
    return index


def record(index, attempt, outcome, detail, peer):
    with lock:
        attempts.append([index, attempt, outcome, detail, peer])
        if outcome == "ok":
            state["acked"] += 1
            peers[peer] = peers.get(peer, 0) + 1
            if state["acked"] - state["reported"] >= 100:
                state["reported"] = state["acked"]
                print(f"progress {state['acked']}", file=sys.stderr, flush=True)


def message(index, attempt):
    ident = f"{RUN}.{index}.{attempt}"
    return (f"From: load@example.org\r\nTo: swarm@example.org\r\nSubject: {ident}\r\n"
            f"X-Swarm-Test: {ident}\r\n\r\nbody of {ident}\r\n").encode()


def worker():
    session = None
    peer = "-"
    in_session = 0
    index = take()
    attempt = 0
    while index is not None:
        if attempt and (stop.is_set() or attempt > 200):
            record(index, attempt, "abandoned", "stopped" if stop.is_set() else "200 tries", peer)
            index, attempt = take(), 0
            continue
        if session is None:
            try:
                session = smtplib.SMTP(HOST, PORT, local_hostname="swarm-client", timeout=30)
                peer = session.sock.getpeername()[0]
                session.ehlo()
                in_session = 0
            except (OSError, smtplib.SMTPException) as error:
                record(index, attempt, "connect", type(error).__name__, peer)
                attempt += 1
                session = close(session)
                stop.wait(0.05)  # a refused connect: do not spin while DNS catches up
                continue
        stage = "envelope"
        try:
            code, text = session.mail("load@example.org")
            if code == 250:
                code, text = session.rcpt("swarm@example.org")
            if code == 250:
                stage = "data"
                code, text = session.data(message(index, attempt))
            if code == 250:
                record(index, attempt, "ok", text.decode().rsplit(" ", 1)[-1], peer)
                index, attempt = take(), 0
                in_session += 1
                if in_session >= PER_SESSION:
                    session = close(session, quit_=True)
                continue
            record(index, attempt, str(code), text.decode(errors="replace")[:80], peer)
            attempt += 1
            if code == 421 or code >= 500:
                session = close(session)
            else:
                session.rset()
        except smtplib.SMTPResponseException as error:  # e.g. 421 as the reply to MAIL
            record(index, attempt, str(error.smtp_code), error.smtp_error.decode(
                errors="replace")[:80], peer)
            attempt += 1
            session = close(session)
        except (OSError, smtplib.SMTPException) as error:
            outcome = "lost" if stage == "data" else "dropped"
            record(index, attempt, outcome, type(error).__name__, peer)
            attempt += 1
            session = close(session)
    close(session, quit_=True)


def close(session, quit_=False):
    if session is not None:
        try:
            if quit_:
                session.quit()
            session.close()
        except (OSError, smtplib.SMTPException):
            pass


def main():
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    by_outcome = {}
    for _, _, outcome, _, _ in attempts:
        by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
    print(json.dumps({
        "run": RUN, "messages": state["next"], "acked": state["acked"],
        "seconds": round(time.monotonic() - started, 2), "outcomes": by_outcome,
        "peers": peers, "attempts": attempts, "resolved": sorted(
            {a[4][0] for a in socket.getaddrinfo(HOST, PORT, type=socket.SOCK_STREAM)}),
    }), flush=True)


main()
