"""Settings of the ``buzon`` server process: the core knobs, plus one mixin per concern.

The mail-host settings (domains, the recipient directory), the TLS settings and the
message-handling settings live in modules of their own (:mod:`.mailhost`, :mod:`.tls`,
:mod:`.messages`); :class:`ServerSettings` inherits them, so there is still one model,
one ``BUZON_`` prefix and one place that reports a bad value.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from buzon.config.common import validate_token
from buzon.config.instance import InstanceSettings
from buzon.config.mailhost import MailHostSettings
from buzon.config.messages import MessageSettings
from buzon.config.observe import ObserveSettings
from buzon.config.queue import QueueSettings
from buzon.config.tls import TlsSettings
from buzon.net import parse_listen

__all__ = ["ServerSettings"]


class ServerSettings(
    MailHostSettings, TlsSettings, MessageSettings, ObserveSettings, InstanceSettings,
    QueueSettings,
):
    """Configuration of the ``buzon`` SMTP server process."""

    model_config = SettingsConfigDict(
        env_prefix="BUZON_",
        extra="ignore",
        secrets_dir=None,
        validate_default=True,
    )

    hostname: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        max_length=253,
        description="Name the server gives itself in the greeting, HELO reply and Received headers.",
    )
    smtp_listen: str = Field(
        "0.0.0.0,::",
        description="Comma-separated addresses the SMTP listener binds (IPv4 and IPv6 by default).",
    )
    smtp_port: int = Field(2525, ge=0, le=65535, description="SMTP TCP port (flag -p).")
    monitor_listen: str = Field(
        "127.0.0.1",
        description=(
            "Comma-separated addresses the UDP monitor binds (loopback by default; "
            "the Compose file sets 0.0.0.0 inside the container and publishes it on "
            "the host's 127.0.0.1)."
        ),
    )
    monitor_port: int = Field(2626, ge=0, le=65535, description="Monitor UDP port (flag -P).")
    http_listen: str = Field("127.0.0.1", description=(
        "Addresses of the HTTP listener (/metrics, /healthz, /readyz); empty: no listener."))
    http_port: int = Field(9025, ge=0, le=65535, description="HTTP port of /metrics, /healthz, /readyz.")
    monitor_token: SecretStr | None = Field(
        None,
        description=(
            "8-character monitor token (flag -u). Unset: a random one is generated at first "
            "start and kept in <data_dir>/monitor.token (mode 0600)."
        ),
    )
    monitor_token_file: Path | None = Field(
        None, description="Read the monitor token from this file instead (Docker secrets)."
    )
    monitor_auth_failures_per_minute: int = Field(
        300,
        ge=1,
        le=100_000,
        description=(
            "Wrong monitor tokens answered per minute from all source addresses together "
            "(also the burst); past it only recently authenticated addresses are answered."
        ),
    )
    data_dir: Path = Field(
        Path("./data"),
        description="Directory for the spool, persisted metrics and the generated token.",
    )
    mail_root: Path | None = Field(
        None, description="Root of the per-recipient Maildirs (default <data_dir>/mail)."
    )
    max_message_size: int = Field(
        10_240_000,
        ge=1024,
        le=1 << 31,
        description="Largest message accepted, in bytes; advertised as SIZE in EHLO.",
    )
    max_recipients: int = Field(
        1000, ge=1, le=100_000, description="Recipients allowed per message (452 4.5.3 past it)."
    )
    max_line_length: int = Field(
        512,
        ge=64,
        le=1001,
        description="Longest SMTP command line, CRLF included (RFC 5321 §4.5.3.1.4).",
    )
    idle_timeout: float = Field(
        300.0, gt=0, le=3600, description="Seconds a session may stay silent (421 4.4.2 after)."
    )
    data_timeout: float = Field(
        600.0,
        gt=0,
        le=86400,
        description=(
            "Seconds a whole DATA transfer may take, however steadily bytes trickle in "
            "(421 4.4.2 after): bounds slow-drip clients that the idle timeout cannot."
        ),
    )
    max_connections: int = Field(
        10_000, ge=1, le=1_000_000, description="Concurrent SMTP sessions (421 when full)."
    )
    max_connections_per_client: int = Field(
        50,
        ge=1,
        le=1_000_000,
        description=(
            "Concurrent SMTP sessions from one client: an IPv4 address or an IPv6 /64 "
            "(421 4.7.0 past it)."
        ),
    )
    client_limit_exempt: str = Field(
        "127.0.0.0/8,::1/128",
        description=(
            "Comma-separated networks not counted by max_connections_per_client "
            "(like Postfix's $mynetworks exception); empty: none."
        ),
    )
    max_messages_per_session: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Messages one SMTP session may send; the next MAIL gets 421 4.7.0.",
    )
    session_lifetime: float = Field(
        3600.0,
        gt=0,
        le=7 * 86400,
        description=(
            "Seconds an SMTP session may last (421 4.7.0 after; a transaction in flight "
            "gets data_timeout more to finish)."
        ),
    )
    data_memory_budget: int = Field(
        256 << 20,
        ge=1 << 20,
        le=1 << 40,
        description=(
            "Bytes of DATA all sessions may buffer in memory at once (452 4.3.1 when it is "
            "used up); at least max_message_size."
        ),
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "SMTP worker processes sharing the port (SO_REUSEPORT) under one supervisor that "
            "runs the monitor; more use more cores and hold more sessions than one process's "
            "file limit allows. 1: everything in one process."
        ),
    )
    shutdown_grace: float = Field(
        10.0, ge=0, le=600, description="Seconds sessions in flight get to finish on SIGTERM."
    )
    transform: str | None = Field(
        None,
        description=(
            "Transform program run locally, stdin to stdout (flag -T), e.g. 'tac'. "
            "Several are chained with '|'."
        ),
    )
    transform_sidecars: str | None = Field(
        None,
        description=(
            "Comma-separated host:port of transform sidecars, in order; overrides 'transform'."
        ),
    )
    transform_key_file: Path | None = Field(
        None,
        description=(
            "File holding the deployment key (64+ hex digits) that authenticates every "
            "sidecar request; required with sidecars, the same file the sidecars read."
        ),
    )
    transform_enabled: bool | None = Field(
        None,
        description=(
            "Whether transforms start enabled; unset: enabled when a transform is configured. "
            "The monitor's enable/disable switch is persisted and wins after the first use."
        ),
    )
    transform_timeout: float = Field(
        30.0, gt=0, le=3600, description="Seconds a transform may take for one message."
    )
    transform_retry_window: float = Field(
        600.0,
        ge=0,
        le=7 * 86400,
        description="Seconds a failing transform is retried before the failure policy applies.",
    )
    retry_backoff: float = Field(
        1.0,
        gt=0,
        le=300,
        description="Seconds before the first retry of a deferred delivery; doubles up to 300.",
    )
    transform_failure_policy: str = Field(
        "hold",
        pattern="^(deliver|hold)$",
        description=(
            "After the retry window: 'hold' the message in the queue and keep retrying the "
            "transform (fails closed, like Postfix's milter_default_action = tempfail), or "
            "'deliver' the original untransformed with an X-Buzon-Transform header (an "
            "explicit choice: mail then skips e.g. the spam filter while it is down)."
        ),
    )
    access_log_file: Path | None = Field(
        None, description="Also append the access log to this file (created mode 0640).")
    access_log_format: str = Field("text", pattern="^(text|json)$", description=(
        "Access log lines: 'text' (one key=value token per field) or 'json' (JSON lines)."))
    log_level: str = Field(
        "INFO",
        pattern="^(DEBUG|INFO|WARNING|ERROR)$",
        description="Level of the server's own log on stderr.",
    )
    event_loop: str = Field(
        "uvloop",
        pattern="^(uvloop|asyncio)$",
        description="Event loop implementation: 'uvloop' (faster; falls back if missing) or 'asyncio'.",
    )
    fsync: bool = Field(
        True,
        description=(
            "Flush the queue and Maildir files to disk before acknowledging; "
            "turn off only for throwaway test runs."
        ),
    )

    @field_validator("smtp_listen", "monitor_listen", "http_listen")
    @classmethod
    def _check_listen(cls, value: str, info: Any) -> str:  # info: pydantic's ValidationInfo
        if value.strip() or info.field_name != "http_listen":  # no HTTP addresses: off
            parse_listen(value)
        return value

    @field_validator("client_limit_exempt")
    @classmethod
    def _check_networks(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            try:
                ipaddress.ip_network(item)
            except ValueError:
                raise ValueError(f"not a network: {item!r} (write e.g. 10.0.0.0/8)") from None
        return value

    @field_validator("monitor_token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            validate_token(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _default_mail_root(self) -> ServerSettings:
        if self.mail_root is None:
            self.mail_root = self.data_dir / "mail"
        return self

    @model_validator(mode="after")
    def _budget_holds_a_message(self) -> ServerSettings:
        if self.data_memory_budget < self.max_message_size:
            # A smaller budget would answer 452 to every large message, forever.
            raise ValueError("BUZON_DATA_MEMORY_BUDGET must be at least BUZON_MAX_MESSAGE_SIZE")
        return self

    @property
    def smtp_hosts(self) -> tuple[str, ...]:
        return parse_listen(self.smtp_listen)

    @property
    def client_limit_networks(self) -> tuple[str, ...]:
        return tuple(filter(None, (p.strip() for p in self.client_limit_exempt.split(","))))

    @property
    def monitor_hosts(self) -> tuple[str, ...]:
        return parse_listen(self.monitor_listen)

    @property
    def mail_dir(self) -> Path:
        assert self.mail_root is not None
        return self.mail_root

    @property
    def instance_dir(self) -> Path:
        """What is this server's own: spool, state file, counters (:mod:`.instance`)."""
        if self.instance is None:
            return self.data_dir
        return self.data_dir / "instances" / self.instance

    @property
    def work_area(self) -> Path:
        """The root of the work area shared with the transform sidecars."""
        return self.data_dir / "work"

    @property
    def instance_work(self) -> Path:
        """This server's part of the work area (its workers' ``w<N>/`` are inside)."""
        if self.instance is None:
            return self.work_area
        return self.work_area / "instances" / self.instance
