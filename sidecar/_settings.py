"""The one settings object: `ARROWMESH_*` environment variables (flags and YAML come with
`sidecar run`), turned into the frozen values the cores take."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from transport import Limits

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

    @model_validator(mode="after")
    def _limits_work_together(self) -> Settings:
        self.limits()  # Limits.__post_init__ says what does not fit, as a ValueError
        return self

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
