"""The options dataclasses' shared constructor (lm-evaluation-harness's `from_cli` idea): each
command's defaults live in its dataclass, and a flag left unset (None) keeps them."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T", bound="FromCli")


class FromCli:
    """Mixin for dataclasses built from CLI keyword arguments."""

    @classmethod
    def from_cli(cls: type[T], **given: Any) -> T:
        """Return options from the CLI's keyword arguments: None means "not given" and keeps the default."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in given.items() if k in names and v is not None})
