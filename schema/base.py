"""The base of every config section, and the error a user reads as is."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class UserError(ValueError):
    """A problem with what the user asked for; commands print its message alone, without a traceback."""


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
