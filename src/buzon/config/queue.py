"""How much the queue may hold before intake slows down, and how deliveries are flushed (issue 16).

Why these defaults: on one core Buzón takes mail faster than it can write it
into Maildirs (the queue is one file per batch, a Maildir one file per copy),
so without a bound the queue grows for as long as the load lasts. 2,000
messages is about one second of delivery on one core: enough backlog to keep
delivery's batches full, short enough that the 250 of a message and its
arrival in ``new/`` stay a second apart. 20,000 is where waiting stops and
refusing (``452 4.3.1``, the client retries) starts: a sidecar that is down
holds messages in the queue, and past that point new mail is better kept by
the senders than by us. 30 s of waiting at most is far inside the 10 minutes
RFC 5321 §4.5.3.2.6 gives a client for the final reply after DATA.

``delivery_sync``: ``batch`` flushes a whole delivery batch with two
``syncfs(2)`` calls instead of two ``fsync`` per message (five times the
delivery rate of one thread here, a quarter of the CPU: see
:mod:`buzon.delivery.writer`); ``file`` is the textbook per-file flush, for a
mail root shared with a busy unrelated workload (``syncfs`` flushes the whole
file system) or a network file system whose ``syncfs`` may not wait for the
server (NFS: use ``file``, docs/scaling.md).
"""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings

__all__ = ["QueueSettings"]


class QueueSettings(BaseSettings):
    """Mixed into :class:`buzon.config.server.ServerSettings` (same ``BUZON_`` prefix)."""

    queue_delay_at: int = Field(
        2000,
        ge=0,
        le=10_000_000,
        description=(
            "Messages queued and not yet delivered (per SMTP process) from which a new "
            "message waits for room before its 250, first come first served; 0: never wait."
        ),
    )
    queue_limit: int = Field(
        20_000,
        ge=0,
        le=10_000_000,
        description=(
            "Messages queued and not yet delivered (per SMTP process) at which a new "
            "message is refused with 452 4.3.1 (the client retries later); 0: no limit."
        ),
    )
    queue_max_delay: float = Field(
        30.0,
        ge=0,
        le=300,
        description=(
            "Seconds a message waits at most for room in the queue; then it is stored if "
            "the queue is under BUZON_QUEUE_LIMIT, else refused with 452 4.3.1."
        ),
    )

    delivery_sync: str = Field(
        "batch",
        pattern="^(batch|file)$",
        description=(
            "How a delivery batch is made durable: 'batch' (two syncfs calls for the whole "
            "batch) or 'file' (fsync of every file and every new/ folder; use it on NFS)."
        ),
    )

    delivery_page_cache: str = Field(
        "drop",
        pattern="^(drop|keep)$",
        description=(
            "What happens to the cached pages of a delivered message once it is on disk: "
            "'drop' them (mail is written once and read later, if at all) or 'keep' them."
        ),
    )

    @field_validator("queue_limit")
    @classmethod
    def _above_the_delay_mark(cls, limit: int, info: ValidationInfo) -> int:
        # Reported on BUZON_QUEUE_LIMIT, naming the other setting.
        delay_at = info.data.get("queue_delay_at")
        if limit and isinstance(delay_at, int) and delay_at >= limit:
            raise ValueError(
                f"must be above BUZON_QUEUE_DELAY_AT ({delay_at}): messages wait for room "
                "before they are refused (0 turns the limit off)"
            )
        return limit
