"""The one settings object: `ARROWMESH_*` environment variables (flags and YAML come with
`sidecar run`), turned into the frozen values the cores take."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from transport import Limits, ShmDomain

_DEFAULTS = Limits()


class Settings(BaseSettings):
    """Every arrowmesh setting; each field has an `ARROWMESH_<NAME>` environment twin.

    Raises pydantic.ValidationError naming the setting that is wrong.
    """

    model_config = SettingsConfigDict(env_prefix="ARROWMESH_", frozen=True, extra="ignore")

    max_message_size: int = Field(_DEFAULTS.max_message_size, gt=0)
    max_header_size: int = Field(_DEFAULTS.max_header_size, ge=4096)
    max_tensors: int = Field(_DEFAULTS.max_tensors, gt=0)
    max_rank: int = Field(_DEFAULTS.max_rank, gt=0)
    inline_threshold: int = Field(_DEFAULTS.inline_threshold, ge=0)
    chunk_size: int = Field(_DEFAULTS.chunk_size, gt=0)
    max_concurrent_streams: int = Field(_DEFAULTS.max_concurrent_streams, gt=0)
    shm_dir: str = "/dev/shm/arrowmesh"  # '' turns shared memory off
    shm_arena_size: int = Field(64 << 20, ge=1 << 20)
    shm_max_bytes: int = Field(4 << 30, ge=1 << 20)
    shm_lease_timeout: float = Field(300.0, gt=0)
    shm_reap_interval: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _limits_work_together(self) -> Settings:
        self.limits()  # Limits.__post_init__ says what does not fit, as a ValueError
        return self

    def shm_domain(self, shm_dir: str | None = None) -> ShmDomain | None:
        """This process's place in the shared-memory directory (blocking: files, pre-fault).

        None when shared memory is off. Raises OSError if the directory is unusable.
        """
        directory = self.shm_dir if shm_dir is None else shm_dir
        if not directory:
            return None
        return ShmDomain(
            directory,
            arena_size=self.shm_arena_size,
            max_bytes=self.shm_max_bytes,
            lease_timeout=self.shm_lease_timeout,
            reap_interval=self.shm_reap_interval,
        )

    def limits(self) -> Limits:
        """The transport limits these settings describe."""
        return Limits(
            max_message_size=self.max_message_size,
            max_header_size=self.max_header_size,
            max_tensors=self.max_tensors,
            max_rank=self.max_rank,
            inline_threshold=self.inline_threshold,
            chunk_size=self.chunk_size,
            max_concurrent_streams=self.max_concurrent_streams,
        )
