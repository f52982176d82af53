"""Which replica this server is, when several share one data directory (issue 15).

Theory of operation
-------------------
Under an orchestrator (Docker Swarm: ``BUZON_INSTANCE={{.Task.Slot}}`` in
``deploy/stack.yaml``) several ``buzon`` servers run on one data volume. What
is meant to be shared stays where it is: the Maildirs (``mail/``), the TLS
files (``tls/``), the monitor token, the users file. What belongs to one
server moves under ``<data_dir>/instances/<name>/``: its queue (``spool/``),
its state file and counters; and its transform files under
``<work area>/instances/<name>/`` in the work area it shares with the
sidecars. The name is a *stable* identity: a replaced task with the same slot
gets the same name, so it recovers and delivers that queue and carries on
counting where its predecessor stopped.

Unset (the default), the layout is exactly the single-server one. The name
becomes a directory, so it is kept to a short safe word; a bad one stops
start-up with one line naming ``BUZON_INSTANCE``.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

__all__ = ["INSTANCE_NAME", "InstanceSettings"]

#: A directory name on every file system, never ``.``/``..``, never hidden.
INSTANCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")


class InstanceSettings(BaseSettings):
    """Mixed into :class:`buzon.config.server.ServerSettings` (same ``BUZON_`` prefix)."""

    instance: str | None = Field(
        None,
        description=(
            "Stable name of this server among replicas sharing one data directory (in a "
            "Swarm stack the task slot, {{.Task.Slot}}): its queue, state file and counters "
            "go under <data_dir>/instances/<name>/, its transform files under "
            "<work area>/instances/<name>/; mail, TLS files and token stay shared. "
            "1-32 letters, digits, '-' or '_'. Unset: a single server's layout."
        ),
    )

    @field_validator("instance", mode="before")
    @classmethod
    def _check_instance(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None  # BUZON_INSTANCE= (set but empty): a single server
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and not INSTANCE_NAME.fullmatch(value):
            raise ValueError(
                "must be 1-32 letters, digits, '-' or '_', starting with a letter or digit "
                "(it names a directory; in a Swarm stack use {{.Task.Slot}})"
            )
        return value
