"""The one vocabulary of transform failures: FailureKind, its two tables, TransformError."""

from __future__ import annotations

import re

import pytest

from buzon.transform import failures
from buzon.transform.failures import RETRYABLE, WIRE_KINDS, FailureKind, TransformError

#: (kind, plain name, retryable, may travel on the wire): the module table, pinned.
KINDS = [
    (FailureKind.TIMEOUT, "timeout", True, True),
    (FailureKind.EXIT, "exit", True, True),
    (FailureKind.BUSY, "busy", True, True),
    (FailureKind.DOWN, "down", True, False),
    (FailureKind.INTERNAL, "internal", True, True),
    (FailureKind.OVERSIZE, "oversize", False, True),
    (FailureKind.SPAWN, "spawn", False, False),
    (FailureKind.PATH, "path", False, True),
    (FailureKind.BAD_REQUEST, "bad-request", False, True),
    (FailureKind.PROTOCOL, "protocol", False, False),
    (FailureKind.AUTH, "auth", True, True),
]


def test_the_table_lists_every_kind_once() -> None:
    assert [kind for kind, *_ in KINDS] == list(FailureKind)


@pytest.mark.parametrize(("kind", "name", "retryable", "on_wire"), KINDS)
def test_each_kind_has_its_name_retryability_and_wire_status(
    kind: FailureKind, name: str, retryable: bool, on_wire: bool
) -> None:
    assert kind.value == name
    assert (kind.retryable, RETRYABLE[kind], RETRYABLE[name]) == (retryable,) * 3
    assert (kind.on_wire, kind in WIRE_KINDS, name in WIRE_KINDS) == (on_wire,) * 3


@pytest.mark.parametrize(("kind", "name"), [(kind, name) for kind, name, *_ in KINDS])
def test_a_kind_formats_as_its_plain_name(kind: FailureKind, name: str) -> None:
    # The delivery worker's header writes f"kind={kind}": its bytes must not change.
    assert (str(kind), f"{kind}", f"kind={kind};", kind) == (name, name, f"kind={name};", name)


def test_the_module_docstring_table_agrees_with_the_tables() -> None:
    row = re.compile(r"^``([a-z-]+)``\s+(yes|no)\s+(yes|no)\s", re.MULTILINE)
    rows = row.findall(failures.__doc__ or "")
    assert rows == [(name, "yes" if r else "no", "yes" if w else "no") for _, name, r, w in KINDS]


def test_transform_error_takes_a_kind_or_its_name() -> None:
    error = TransformError(FailureKind.EXIT, "tac exited with status 1")
    assert error.kind is FailureKind.EXIT
    assert (str(error), error.detail) == ("exit: tac exited with status 1",
                                          "tac exited with status 1")
    assert TransformError("bad-request", "x").kind is FailureKind.BAD_REQUEST


def test_transform_error_retryable_defaults_follow_the_kind() -> None:
    assert TransformError("down", "x").retryable is True
    assert TransformError(FailureKind.OVERSIZE, "x").retryable is False
    assert TransformError("oversize", "x", retryable=True).retryable is True
    assert TransformError("timeout", "x", retryable=False).retryable is False


def test_transform_error_refuses_an_unknown_kind() -> None:
    # One vocabulary: a misspelt kind is a bug, not a silently retryable failure.
    with pytest.raises(ValueError, match="'something-new' is not a valid FailureKind"):
        TransformError("something-new", "x")
