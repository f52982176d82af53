"""``monitor-client --all-replicas``: one question to every address a name resolves to.

Theory of operation
-------------------
Replicas keep their own counters (issue 15: each Swarm task counts what it
did, in its own state file), so a total is a sum made where it is read. With
``--all-replicas`` the client resolves the host name (in Swarm, ``tasks.smtp``
or a ``dnsrr`` service name: one address per running task), asks each address
the same question, and prints the sum of the counters; the switch commands are
sent to every replica, and the status reads ``enabled``/``disabled`` only when
all of them agree (``mixed`` otherwise, exit status 1).

It is a flag, not automatic when a name has several addresses, because a name
with several addresses is just as often *one* server reached two ways (a host
with an IPv4 and an IPv6 address): summing those would double every count.
For the same reason the addresses are taken as given and asked once each.
Replicas that are not behind one name can be listed: ``-H a,b,c``.

A total must be whole or nothing: a replica that does not answer, or answers
with an error, makes the command fail with that replica named, rather than
print a smaller sum.
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import sys
from collections.abc import Callable
from typing import Any

from buzon.config import ClientSettings

__all__ = ["EXIT_MIXED", "addresses_of", "ask_all", "run_all"]

EXIT_MIXED = 1  # the replicas' transform switches disagree

#: ``(family, sockaddr)`` as :func:`buzon.monitor.client.exchange` takes it.
Address = tuple[int, tuple[Any, ...]]


def addresses_of(host: str, port: int, resolve: Callable[..., Any] = socket.getaddrinfo,
                 ) -> list[Address]:
    """Every distinct UDP address ``host`` resolves to, in the resolver's order.

    ``host`` may also list names separated by commas (replicas outside Swarm,
    each on its own address): every address of each, in order.

    Raises:
        OSError: a name does not resolve.
    """
    seen: list[Address] = []
    for name in filter(None, (part.strip() for part in host.split(","))):
        for family, _, _, _, sockaddr in resolve(name, port, type=socket.SOCK_DGRAM):
            if (family, sockaddr) not in seen:
                seen.append((family, sockaddr))
    return seen


def _text(address: Address) -> str:
    from buzon.net import format_address

    return format_address(address[1][0], address[1][1])


def ask_all(
    addresses: list[Address],
    ask: Callable[[Address], tuple[bool, int, str]],
    *,
    name: str,
    label: str | None,
    as_json: bool,
) -> int:
    """Ask every address and print the total; the exit status.

    Args:
        addresses: the replicas, from :func:`addresses_of`.
        ask: asks one replica; returns (ok, value, error text). Its exceptions
            (:class:`~buzon.monitor.client.NoAnswer`, ``OSError``...) end the command
            and are the caller's to report.
        name: the command's name (``mails``), for the JSON output.
        label: the counter's label (``Mails sent``); None for the transform switch,
            whose value is 0 or 1.
        as_json: print one JSON object instead of text.

    Returns:
        0; :data:`EXIT_MIXED` when the switches disagree; the first error's status
        (``ask`` returns it as the value when not ok).
    """
    values: dict[str, int] = {}
    for address in addresses:
        ok, value, error = ask(address)
        if not ok:
            print(f"Error: {_text(address)}: {error}", file=sys.stderr)
            return value
        values[_text(address)] = value
    total: int | str
    if label is not None:
        total = sum(values.values())
        line = f"{label}: {total}"
    else:
        states = set(values.values())
        total = "mixed" if len(states) > 1 else ("enabled" if states == {1} else "disabled")
        line = f"Transformations: {total}"
    if as_json:
        print(json.dumps({"command": name, "status": "ok", "value": total,
                          "replicas": values}))
    else:
        print(f"Replicas: {len(values)}")
        print(line)
        if total == "mixed":
            for where, value in values.items():
                print(f"  {where}: {'enabled' if value else 'disabled'}")
    return EXIT_MIXED if total == "mixed" else 0


def run_all(token: bytes, args: argparse.Namespace, settings: ClientSettings) -> int:
    """``monitor-client --all-replicas COMMAND`` once the token and settings are known."""
    # Imported here: client imports this module from its main().
    from buzon.monitor import client_v1
    from buzon.monitor.client import (
        _ERROR_TEXT,
        _LABEL,
        _NAME_OF,
        EXIT_NETWORK,
        EXIT_NO_REPLY,
        EXIT_STATUS_BASE,
        NoAnswer,
        PortClosed,
        query,
    )
    from buzon.monitor.wire import Request, Status
    from buzon.monitor.wire_v1 import StatusV1, derive_key

    key, command = derive_key(token), args.command

    def ask(address: tuple[int, tuple]) -> tuple[bool, int, str]:
        try:
            if args.v0:
                response = query(address, Request(secrets.randbelow(0x10000), token, command),
                                 timeout=settings.timeout, retries=settings.retries)
                value = response.u32 if command in _LABEL else int(response.flag)
                ok, error = response.status is Status.OK, _ERROR_TEXT.get(response.status, "")
                return ok, value if ok else EXIT_STATUS_BASE + int(response.status), error
            reply = client_v1.query_v1(address, key, command, timeout=settings.timeout,
                                       retries=settings.retries)
        except (NoAnswer, PortClosed) as error:
            return False, EXIT_NO_REPLY if isinstance(error, NoAnswer) else EXIT_NETWORK, (
                f"no reply after {error.tries} tries")
        except OSError as error:
            return False, EXIT_NETWORK, f"cannot reach it: {error.strerror or error}"
        ok = reply.status is StatusV1.OK
        return (ok, reply.value if ok else EXIT_STATUS_BASE + int(reply.status),
                client_v1.ERROR_TEXT_V1.get(reply.status, ""))

    labels = _LABEL if args.v0 else client_v1.LABEL_V1
    names = _NAME_OF if args.v0 else client_v1.NAME_OF_V1
    addresses = addresses_of(settings.host, settings.port)
    return ask_all(addresses, ask, name=names[command], label=labels.get(command),
                   as_json=args.json)
