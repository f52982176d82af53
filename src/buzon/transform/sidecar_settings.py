"""The settings of one ``buzon-sidecar`` process: ``BUZON_SIDECAR_*``, each flag overriding one.

One pydantic-settings class per process (STYLE practice 8): built once in
:func:`buzon.transform.sidecar.main` from the environment and the flags, then
passed down to :class:`~buzon.transform.sidecar_server.Sidecar`; every field is
described and bounded, and a bad value stops start-up with one line naming the
variable (exit status 2). ``scripts/gen-env-example.py`` writes ``.env.example``
from the descriptions.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from buzon.net import parse_listen

__all__ = ["SidecarSettings"]


class SidecarSettings(BaseSettings):
    """Configuration of one ``buzon-sidecar`` process; flags override the environment."""

    model_config = SettingsConfigDict(env_prefix="BUZON_SIDECAR_", extra="ignore")

    listen: str = Field(
        "127.0.0.1",
        description=(
            "Comma-separated addresses to listen on (flag --listen); only smtp should "
            "reach them (the images set 0.0.0.0 on a network smtp alone shares)."
        ),
    )
    port: int = Field(7000, ge=0, le=65535, description="TCP port (flag --port).")
    root: Path = Field(
        description=(
            "The work area shared with smtp (transform files only); no path outside it "
            "is touched (--root)."
        )
    )
    key_file: Path | None = Field(
        None,
        description=(
            "File holding the deployment key (64+ hex digits) that authenticates every "
            "request; required (--key-file)."
        ),
    )
    max_skew: float = Field(
        30.0, ge=1, le=600,
        description=(
            "Seconds a request's timestamp may differ from this clock; older ones, and any "
            "nonce seen inside the window, are refused as replays."
        ),
    )
    timeout: float = Field(
        30.0, gt=0, le=3600, description="Seconds the program may take per message (--timeout)."
    )
    concurrency: int = Field(
        4, ge=1, le=1024, description="Programs run at once (--concurrency)."
    )
    queue: int = Field(
        32, ge=0, le=100_000,
        description="Requests that may wait for a free slot; past it the answer is busy (--queue).",
    )
    max_output: int = Field(
        20_480_000, ge=1, le=1 << 34,
        description="Largest output accepted, in bytes; the program is killed past it.",
    )
    grace: float = Field(
        8.0, ge=0, le=3600,
        description="Seconds requests in flight get to finish on SIGTERM (--grace).",
    )
    command: str | None = Field(
        None, description="The program line, shell-split, used when no `-- COMMAND` is given."
    )
    fsync: bool = Field(True, description="Flush each output to disk before renaming it.")
    log_level: str = Field(
        "INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$", description="Log level on stderr."
    )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_listen(value)
        return value
