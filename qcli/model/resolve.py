"""Finding a model's config.json and safetensors metadata: a local directory, a config file, the
reserved `demo` name, or a hub id through huggingface_hub (honours HF_TOKEN, HF_HOME, HF_HUB_OFFLINE)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qcli.errors import UsageError
from qcli.model.demo import DEMO_CONFIG, DEMO_NAME
from qcli.model.safetensors_header import DTYPE_BYTES, stored_bytes

_HUB_ID = r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$"


@dataclass
class ModelSource:
    """Where a model's files are and what its config says."""

    name: str
    config: dict[str, Any]
    local_dir: Path | None = None
    hub_id: str | None = None
    stored_bytes: dict[str, int] = field(default_factory=dict)  # safetensors bytes per stored dtype

    @property
    def quantization_config(self) -> dict[str, Any] | None:
        q = self.config.get("quantization_config")
        return q if isinstance(q, dict) else None


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise UsageError(f"{path}: JSON nested too deeply to be a model config") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the top level must be a JSON object")
    return data


def resolve(model: str, revision: str | None = None, read_safetensors: bool = True) -> ModelSource:
    """Return the ModelSource for a local dir, a config.json path, `demo`, or a hub id."""
    if model == DEMO_NAME:
        return ModelSource(name=DEMO_NAME, config=dict(DEMO_CONFIG))
    path = Path(model).expanduser()
    if path.is_file():
        return ModelSource(name=model, config=_read_config(path), local_dir=path.parent)
    if path.is_dir():
        cfg = path / "config.json"
        if not cfg.is_file():
            raise UsageError(f"{model}: no config.json in this directory", "point at a saved transformers model")
        # Headers are checked even when their sizes are not needed: a bad file is exit 2 before any load.
        stored = stored_bytes(path)
        return ModelSource(name=model, config=_read_config(cfg), local_dir=path, stored_bytes=stored)
    import re

    if model.startswith((".", "/", "~")) or not re.match(_HUB_ID, model):
        raise UsageError(f"{model}: no such file or directory", "give a model directory, a config.json or a hub id")
    return _from_hub(model, revision, read_safetensors)


def _from_hub(repo_id: str, revision: str | None, read_safetensors: bool) -> ModelSource:
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import get_safetensors_metadata, hf_hub_download

    try:
        path = Path(hf_hub_download(repo_id, "config.json", revision=revision))
    except hf_errors.HFValidationError as exc:
        first = " ".join(str(exc).split())[:160]
        raise UsageError(f"{repo_id[:100]!r} is not a valid hub id: {first}", "ids look like org/name") from None
    except hf_errors.GatedRepoError:
        raise UsageError(
            f"{repo_id} is gated", "accept its licence on the hub, then set HF_TOKEN or run `hf auth login`"
        ) from None
    except hf_errors.RepositoryNotFoundError:
        raise UsageError(
            f"{repo_id}: no such model on the hub (or it is private)", "check the id; for a private repo set HF_TOKEN"
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise UsageError(f"{repo_id}: revision {revision!r} not found") from None
    except hf_errors.EntryNotFoundError:
        raise UsageError(f"{repo_id} has no config.json", "is it a transformers model?") from None
    except (hf_errors.LocalEntryNotFoundError, OSError) as exc:
        raise UsageError(
            f"{repo_id}: config.json is not in the local cache and the hub cannot be reached ({type(exc).__name__})",
            "connect, unset HF_HUB_OFFLINE, or pass a local directory",
        ) from None
    source = ModelSource(name=repo_id, config=_read_config(path), hub_id=repo_id)
    if read_safetensors:
        try:
            meta = get_safetensors_metadata(repo_id, revision=revision)
            for file_meta in meta.files_metadata.values():
                for tensor in file_meta.tensors.values():
                    n = 1
                    for d in tensor.shape:
                        n *= d
                    source.stored_bytes[tensor.dtype] = source.stored_bytes.get(tensor.dtype, 0) + n * DTYPE_BYTES.get(
                        tensor.dtype, 0
                    )
        except Exception:
            pass
    return source
