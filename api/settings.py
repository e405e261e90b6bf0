"""Service settings: from the environment (prefix ``DISTILL_``) or from ``distill serve`` flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1 << 20


class Settings(BaseSettings):
    """Environment: ``DISTILL_ROOT``, ``DISTILL_TOKEN_FILE``, ``DISTILL_MAX_BLOCK``, etc."""

    model_config = SettingsConfigDict(env_prefix="DISTILL_", frozen=True, extra="ignore")

    root: Path = Field(description="folder whose sub-folders are stores")
    token_file: Path | None = Field(None, description="file holding the bearer token")
    max_block: int = Field(131072, ge=1, description="most samples one block request may ask")
    cache_bytes: int = Field(256 * MiB, ge=0, description="LRU budget: file bytes + chunks")
    max_inflight: int = Field(64, ge=1, description="concurrent requests before 503")
    retry_after_s: int = Field(1, ge=0, description="Retry-After sent with a 503")
    rescan_interval_s: float = Field(1.0, ge=0.0, description="least time between root scans")


def read_token(path: Path | None) -> str | None:
    """The bearer token from ``path`` (surrounding whitespace stripped), or None without one."""
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise ValueError(f"token file {path} is unreadable: {e}") from None
    if not token:
        raise ValueError(f"token file {path} is empty; put the bearer token in it")
    return token
