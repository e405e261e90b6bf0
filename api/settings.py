"""Service settings: from the environment (prefix ``DISTILL_``) or from ``distill serve`` flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1 << 20


class Settings(BaseSettings):
    """Environment: ``DISTILL_ROOT``, ``DISTILL_TOKEN_FILE``, ``DISTILL_MAX_BLOCK``, etc."""

    model_config = SettingsConfigDict(env_prefix="DISTILL_", frozen=True, extra="ignore")

    root: str = Field(
        description="folder (or object-store prefix, s3://BUCKET/PREFIX) whose sub-folders are "
        "stores"
    )
    token_file: Path | None = Field(None, description="file holding the bearer token")

    @field_validator("root", mode="before")
    @classmethod
    def _root_text(cls, value: Any) -> Any:
        """A Path is taken as its text (a URL would not survive Path())."""
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    # Bounds far above real use (a block of 4M samples is ~130 MB at K=10): a typo is refused.
    max_block: int = Field(
        131072, ge=1, le=1 << 22, description="most samples one block request may ask"
    )
    cache_bytes: int = Field(256 * MiB, ge=0, description="LRU budget: file bytes + chunks")
    max_inflight: int = Field(64, ge=1, description="concurrent requests before 503")
    retry_after_s: int = Field(1, ge=0, description="Retry-After sent with a 503")
    rescan_interval_s: float = Field(1.0, ge=0.0, description="least time between root scans")
    max_inflight_bytes: int = Field(
        256 * MiB, ge=1, description="response bytes held for unfinished sends before 503"
    )
    max_body_bytes: int = Field(
        1024, ge=0, le=1 << 20, description="largest request body (GET only): 413"
    )
    malloc_arenas: int = Field(
        2,
        ge=0,
        description="glibc malloc arenas (mallopt M_ARENA_MAX), and freed cache memory trimmed "
        "once a second; 0 leaves glibc's defaults",
    )
    render_workers: int = Field(
        1, ge=1, le=64, description="worker processes that render view PNGs (off the server)"
    )
    render_queue: int = Field(
        8, ge=0, le=4096, description="view renders waiting beyond the running ones before 503"
    )
    render_cache_bytes: int = Field(
        32 * MiB, ge=0, description="LRU budget for recently rendered view PNGs"
    )
    render_nice: int = Field(
        10, ge=0, le=19, description="CPU niceness of the render workers (renders yield)"
    )
    data: str = Field(
        "",
        description="images of stores, 'NAME=DIR[,NAME=DIR...]', DIR a folder, a URL of one "
        "(s3://b/train/) or tar shards (shard-{000000..000127}.tar): lets the dashboard and "
        "/v1/stores/{name}/views render views (needs torch)",
    )

    def data_dirs(self) -> dict[str, str]:
        """``data`` as {store name: its images}; ValueError naming a malformed entry."""
        return parse_data(self.data)


class ConnectionLimits(BaseSettings):
    """uvicorn's connection limits (``distill serve`` flags, or ``DISTILL_*`` variables).

    uvicorn 0.54 closes an idle connection only after a response (``timeout_keep_alive``); one
    that sends nothing, or only part of its headers, stays open for ever (measured with raw
    sockets), and a client that stops reading pins its response. ``api.protocol`` adds the
    header and send timeouts.
    """

    model_config = SettingsConfigDict(env_prefix="DISTILL_", frozen=True, extra="ignore")

    timeout_keep_alive_s: float = Field(5.0, gt=0, description="idle time after a response")
    header_timeout_s: float = Field(
        10.0, gt=0, description="time for a whole request head, from connect or last response"
    )
    send_timeout_s: float = Field(
        30.0, gt=0, description="time a client may read nothing of a response before close"
    )
    limit_concurrency: int = Field(
        512, ge=1, description="open connections + requests before uvicorn answers 503"
    )
    max_header_bytes: int = Field(
        16384, ge=1024, le=1 << 20, description="largest request head (h11)"
    )

    def uvicorn_options(self) -> dict[str, Any]:
        """Keyword arguments for ``uvicorn.run``/``uvicorn.Config``."""
        return {
            "http": "api.protocol:GuardedH11Protocol",
            "timeout_keep_alive": self.timeout_keep_alive_s,
            "limit_concurrency": self.limit_concurrency,
            "h11_max_incomplete_event_size": self.max_header_bytes,
        }


def parse_data(spec: str) -> dict[str, str]:
    """'NAME=DIR[,NAME=DIR...]' -> {NAME: DIR}, DIR as given (a folder, an fsspec URL of one,
    or a tar shard pattern: :func:`teacher_store.images.source.open_images`); ValueError naming
    a malformed or repeated entry."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, folder = item.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise ValueError(f"--data {item!r} is malformed; write NAME=DIR (store name = images)")
        name = name.strip()
        if name in out:
            raise ValueError(
                f"--data {name} is given twice ({out[name]} and {folder.strip()}); give each "
                "store one image folder"
            )
        out[name] = folder.strip()
    return out


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
