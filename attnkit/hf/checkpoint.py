"""A Hugging Face checkpoint directory read strictly: config.json and safetensors, never a pickle.

`save_pretrained` writes config.json and model.safetensors (or shards listed in
model.safetensors.index.json), and the tokenizer's files beside them. `Checkpoint` hands out the
tensors by name and, when the conversion is done, insists that every tensor was used or is on the
architecture's list of tensors it may ignore, so that a checkpoint of a variant attnkit does not hold
fails by name instead of loading half its weights.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from attnkit.errors import UserError

PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")


class CheckpointImportError(UserError):
    """A checkpoint that cannot be imported: missing or unused tensors, an unsupported setting."""


class Checkpoint:
    """The config and tensors of a `save_pretrained` directory.

    Args:
        directory: holds config.json and model.safetensors (or its shards).

    Attributes:
        config: config.json as a dict; model_type: its "model_type".
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise CheckpointImportError(f"{self.directory}: not a directory (a save_pretrained folder is expected)")
        config_path = self.directory / "config.json"
        if not config_path.is_file():
            raise CheckpointImportError(f"{self.directory}: no config.json (not a save_pretrained folder)")
        try:
            self.config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise CheckpointImportError(f"{config_path}: cannot be read as JSON ({error})") from None
        if not isinstance(self.config, dict):
            raise CheckpointImportError(f"{config_path}: not a model configuration (a JSON object is expected)")
        self.model_type = str(self.config.get("model_type", ""))
        self._tensors = self._read_tensors()
        self._used: set[str] = set()

    def _read_tensors(self) -> dict[str, Tensor]:
        index = self.directory / "model.safetensors.index.json"
        if index.is_file():
            try:
                files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                raise CheckpointImportError(f"{index}: not a safetensors index ({error})") from None
        elif (self.directory / "model.safetensors").is_file():
            files = ["model.safetensors"]
        else:
            pickled = [name for name in PICKLED if (self.directory / name).exists()]
            if pickled:
                raise CheckpointImportError(
                    f"{self.directory}: only {pickled[0]} is there, and attnkit never unpickles a file; convert it"
                    " where you trust it: transformers' AutoModel.from_pretrained(DIR).save_pretrained(NEW_DIR)"
                    " writes model.safetensors (safe_serialization is the default)"
                )
            raise CheckpointImportError(f"{self.directory}: no model.safetensors")
        tensors: dict[str, Tensor] = {}
        for name in files:
            try:
                tensors.update(load_file(str(self.directory / name)))
            except (SafetensorError, OSError, ValueError) as error:
                raise CheckpointImportError(f"{self.directory / name}: cannot be read ({error})") from None
        return {key: value.float() if value.is_floating_point() else value for key, value in tensors.items()}

    def names(self) -> list[str]:
        """Every tensor name in the checkpoint."""
        return sorted(self._tensors)

    def has(self, name: str) -> bool:
        return name in self._tensors

    def take(self, name: str) -> Tensor:
        """The tensor `name`, marked as used; a missing one is an error naming it."""
        if name not in self._tensors:
            raise CheckpointImportError(f"{self.directory}: the checkpoint has no tensor {name!r}")
        self._used.add(name)
        return self._tensors[name]

    def finish(self, ignore: Iterable[str] = ()) -> None:
        """Check that every tensor was taken or matches one of the `ignore` regular expressions."""
        patterns = [re.compile(p) for p in ignore]
        left = [n for n in self.names() if n not in self._used and not any(p.fullmatch(n) for p in patterns)]
        if left:
            shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
            raise CheckpointImportError(
                f"{self.directory}: {len(left)} tensor(s) that attnkit's {self.model_type} import does not use: {shown}"
            )

    def setting(self, key: str, default: Any = None) -> Any:
        """config.json's value for `key`, or `default`."""
        return self.config.get(key, default)

    def require(self, key: str, allowed: Iterable[Any], what: str | None = None) -> Any:
        """config.json's `key`, refused by name unless it is one of `allowed`."""
        value = self.config.get(key)
        allowed = list(allowed)
        if value not in allowed:
            shown = ", ".join(repr(a) for a in allowed)
            raise CheckpointImportError(
                f"{self.directory}: {what or key} {value!r} is not supported by attnkit's {self.model_type} import"
                f" (supported: {shown})"
            )
        return value

    def head_size(self, name: str) -> int | None:
        """Rows of the weight `name` (a classification head's classes), or None when there is none."""
        return int(self._tensors[name].shape[0]) if name in self._tensors else None

    def take_layers(
        self, state: dict[str, Tensor], count: int, source: str, target: str, names: dict[str, str]
    ) -> None:
        """For each layer i < count and each (theirs -> ours) of `names`, the weight and bias
        `source.format(i) + theirs` into `state[target.format(i) + ours]`."""
        for i in range(count):
            for theirs, ours in names.items():
                for kind in ("weight", "bias"):
                    state[f"{target.format(i)}{ours}.{kind}"] = self.take(f"{source.format(i)}{theirs}.{kind}")

    def prefix(self, candidates: Iterable[str]) -> str:
        """The first of `candidates` that starts some tensor name ("bert.", "transformer.", ...), else ""."""
        for candidate in candidates:
            if any(name.startswith(candidate) for name in self._tensors):
                return candidate
        return ""
