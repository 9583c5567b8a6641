"""What every typed configuration shares: a plain dict for config.json and back, strictly."""

from __future__ import annotations

import dataclasses
from typing import Any, Self


class DictConfig:
    """Mixin for frozen config dataclasses: `to_dict()` and `from_dict()`, refusing unknown keys."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (for config.json)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Rebuild from `to_dict`'s output; unknown keys are an error, not ignored.

        A field added after configurations were saved takes, when absent, the value its behaviour
        had before it existed: the class lists those in `SAVED_WITHOUT` (field -> value) where they
        differ from the field's default; other absent fields take their defaults."""
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
        return cls(**{**getattr(cls, "SAVED_WITHOUT", {}), **data})
