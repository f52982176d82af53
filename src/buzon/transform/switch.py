"""The run-time transform switch (monitor commands 0x04-0x06), persisted across restarts.

``enable`` with no transform configured is refused: the
monitor answers status 0x05 ("no transform program defined") and the state
stays off. ``on_change`` lets the server persist the new state at once, so an
operator's switch survives a restart (issue 4).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["FollowedSwitch", "NoTransformConfigured", "TransformSwitch"]


class NoTransformConfigured(RuntimeError):
    """Enabling transforms was asked for, but no transform program is configured."""


class TransformSwitch:
    """Whether queued messages pass through the configured transforms."""

    def __init__(
        self,
        *,
        configured: bool,
        enabled: bool,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._configured = configured
        self._enabled = enabled and configured
        self._on_change = on_change

    @property
    def configured(self) -> bool:
        return self._configured

    @property
    def enabled(self) -> bool:
        return self._enabled

    def set_enabled(self, on: bool) -> None:
        """Switch transforms on or off.

        Raises:
            NoTransformConfigured: ``on`` with no transform configured.
        """
        if on and not self._configured:
            raise NoTransformConfigured("no transform program defined")
        old, self._enabled = self._enabled, bool(on)
        if old != self._enabled and self._on_change is not None:
            try:
                self._on_change(self._enabled)
            except BaseException:
                # Not saved: keep answering (and running) what a restart would restore.
                self._enabled = old
                raise


class FollowedSwitch:
    """A worker process's view of the supervisor's switch (read per message, never set)."""

    def __init__(self, *, configured: bool, read: Callable[[], bool]) -> None:
        self._configured = configured
        self._read = read

    @property
    def configured(self) -> bool:
        return self._configured

    @property
    def enabled(self) -> bool:
        return self._configured and self._read()
