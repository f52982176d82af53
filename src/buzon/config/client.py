"""Settings of the ``monitor-client`` command."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from buzon.config.common import validate_token

__all__ = ["ClientSettings"]


class ClientSettings(BaseSettings):
    """Configuration of the ``monitor-client`` command."""

    model_config = SettingsConfigDict(env_prefix="BUZON_MONITOR_", extra="ignore")

    host: str = Field("localhost", min_length=1, description="Monitor server host name or address.")
    port: int = Field(2626, ge=1, le=65535, description="Monitor server UDP port.")
    token: SecretStr | None = Field(None, description="The 8-character monitor token.")
    token_file: Path | None = Field(
        None, description="File holding the token (the server's <data_dir>/monitor.token)."
    )
    timeout: float = Field(5.0, gt=0, le=60, description="Seconds to wait for each reply.")
    retries: int = Field(2, ge=0, le=10, description="Resends (same id) after a timeout.")

    @field_validator("token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        # The same rule as the server's: a token it would refuse is an error here too.
        if value is not None:
            validate_token(value.get_secret_value())
        return value
