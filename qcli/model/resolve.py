"""Finding a model's config.json and the bytes its safetensors store: a local directory, a config file, the
reserved `demo` name, a hub id or a hub URL (the hub through qcli.model.hub and huggingface_hub, which
honours HF_TOKEN, HF_HOME, HF_ENDPOINT and HF_HUB_OFFLINE)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from qcli.errors import HubFileMissing, UsageError, too_many_digits
from qcli.model import hub
from qcli.model.demo import DEMO_CONFIG, DEMO_NAME
from qcli.model.safetensors_header import (
    INDEX_NAME,
    SINGLE_NAME,
    declared_total_size,
    read_index,
    stored_bytes,
    total_size_note,
)
from qcli.paths import user_path
from qcli.resources import cache_root

_HUB_ID = r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$"
ConfigFrom = Literal["builtin", "local", "cache", "hub"]


@dataclass
class ModelSource:
    """Where a model's files are, which commit they are, and what its config says."""

    name: str
    config: dict[str, Any]
    config_from: ConfigFrom
    local_dir: Path | None = None
    repo_id: str | None = None
    revision: str | None = None  # as asked for (default: main)
    commit_sha: str | None = None  # what the revision resolved to
    # bytes per stored dtype: the sum of the tensors' data_offsets spans in the safetensors headers of the
    # files transformers loads; None when unknown (no safetensors, or the hub did not give the headers)
    stored_bytes: dict[str, int] | None = None
    # a hub repo's first `*.weight` stored as integers or booleans (file, tensor, dtype), read from the same
    # headers; None when there is none or they were not read (a local directory's files are read at the check)
    non_float_weight: tuple[str, str, str] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def quantization_config(self) -> dict[str, Any] | None:
        q = self.config.get("quantization_config")
        return q if isinstance(q, dict) else None


def _read_config(path: Path, shown: str | None = None) -> dict[str, Any]:
    """Return a config.json's object; errors name it as `shown` (a hub file: repo, revision, file name)."""
    name = shown or str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{name}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise UsageError(f"{name}: JSON nested too deeply to be a model config") from None
    except UnicodeDecodeError:
        raise UsageError(f"{name}: not UTF-8 text", "save config.json as UTF-8 JSON") from None
    except OSError as exc:
        raise UsageError(f"{name}: cannot be read ({exc.strerror or exc})") from None
    except ValueError:  # JSONDecodeError's base (after UnicodeDecodeError, a subclass too): Python's int-digit limit
        raise UsageError(f"{name}: {too_many_digits()}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{name}: the top level must be a JSON object")
    return data


def resolve(
    model: str, revision: str | None = None, read_safetensors: bool = True, token: str | None = None
) -> ModelSource:
    """Return the ModelSource for a local dir, a config.json path, `demo`, a hub id or a hub URL."""
    if revision is not None and not revision.strip():
        raise UsageError("--revision is empty", "give a branch, tag or commit, or leave --revision out for main")
    if token is not None:  # a local model never sends it, but a --token that cannot be a token is bad input
        hub.check_token(token)
    if model == DEMO_NAME:
        return ModelSource(name=DEMO_NAME, config=dict(DEMO_CONFIG), config_from="builtin")
    from_url = hub.parse_url(model)
    if from_url is not None:
        repo_id, url_revision = from_url
        if revision is not None and url_revision is not None and revision != url_revision:
            raise UsageError(f"{model} names revision {url_revision!r} and --revision says {revision!r}: give one")
        return _from_hub(repo_id, revision or url_revision, read_safetensors, token)
    if not model.strip():
        raise UsageError("the model is empty", "give a model directory, a config.json, a hub id or a hub URL")
    path = user_path(model, "model")
    if path.exists() and not path.is_file() and not path.is_dir():
        raise UsageError(
            f"{model}: not a regular file or directory (a FIFO or device)", "give a model directory or a config.json"
        )
    if path.is_file():
        return ModelSource(name=model, config=_read_config(path), config_from="local", local_dir=path.parent)
    if path.is_dir():
        cfg = path / "config.json"
        if not cfg.is_file():
            from qcli.model.repo_files import local_files, no_config, read_local_json

            held, hint = no_config(
                local_files(path),
                read_local_json(path),
                lambda folder: f"give {str(Path(model) / folder)!r}, the folder with the config.json",
                "directory",
            )
            if hint == "is it a transformers model?":
                hint = "point at a saved transformers model"
            raise UsageError(f"{model}: no config.json in this directory; {held}", hint)
        # Headers are checked even when their sizes are not needed: a bad file is exit 2 before any load.
        stored = stored_bytes(path)
        source = ModelSource(
            name=model, config=_read_config(cfg), config_from="local", local_dir=path, stored_bytes=stored
        )
        if stored is not None and not (path / SINGLE_NAME).exists():  # shards: does the index's total agree?
            disagree = total_size_note(declared_total_size(read_index(path / INDEX_NAME)), stored)
            if disagree:
                source.notes.append(disagree)
        if stored is None:  # a config.json alone says nothing; weights transformers would not size do
            from qcli.model.repo_files import has_weights, local_files, no_safetensors, read_local_json

            files = {n: size for n, size in local_files(path).items() if "/" not in n}
            if has_weights(files):
                source.notes.append(no_safetensors(files, read_local_json(path), "directory", "here"))
        return source
    if path.is_symlink():  # it names a local entry, not a hub repo: the link points nowhere, or at itself
        raise UsageError(
            f"{model}: a symbolic link to nothing (its target is missing, or the links loop)",
            "point at the model directory itself",
        )
    if model != model.strip():
        # The error line collapses whitespace: `' m'` would read as "m: no such file" beside an existing m.
        raise UsageError(
            f"{model!r}: no such file or directory; the name starts or ends with whitespace",
            f"did you mean {model.strip()!r}?",
        )
    url = hub.schemeless_url(model)  # huggingface.co/org/name: no local path has that name (checked above)
    if url is not None:
        return resolve(url, revision, read_safetensors=read_safetensors, token=token)
    if model.startswith((".", "/", "~")) or not re.match(_HUB_ID, model):
        raise UsageError(
            f"{model}: no such file or directory", "give a model directory, a config.json, a hub id or a hub URL"
        )
    first = model.split("/", 1)[0]
    if "/" in model and Path(first).is_dir():  # a path into a local folder, mistyped: not a hub id to ask for
        raise UsageError(
            f"{model}: no such file or directory, though there is a local folder {first}/",
            f"check the path; for the hub repo of that name, give https://huggingface.co/{model}",
        )
    return _from_hub(model, revision, read_safetensors, token)


def _from_hub(repo_id: str, revision: str | None, read_safetensors: bool, token: str | None) -> ModelSource:
    hub.check_token(token)
    try:
        got = hub.fetch(repo_id, "config.json", revision, token)
    except HubFileMissing as exc:  # say what the repo holds instead: an adapter, a subfolder, GGUF files
        instead = hub.why_no_config(repo_id, exc.revision, token)
        if instead is not None:
            exc.detail, exc.hint = instead
        raise
    rev = revision or hub.DEFAULT_REVISION
    shown = f"{repo_id}: config.json at {rev}" + ("" if rev == got.commit_sha else f" (commit {got.commit_sha[:12]})")
    try:
        config = _read_config(got.path, shown)
    except UsageError as exc:
        if got.came_from != "cache":
            raise
        # The hub's cache keeps what a download wrote; a copy damaged since (a disk, an edit) reads the same.
        raise UsageError(
            f"{exc.message}, as read from the hub cache ({got.path})",
            "if the hub's copy is good, the cached one is damaged: "
            f"`hf download {repo_id} config.json --revision {got.commit_sha} --force-download` replaces it",
        ) from None
    source = ModelSource(
        name=repo_id,
        config=config,
        config_from=got.came_from,  # type: ignore[arg-type]
        repo_id=repo_id,
        revision=revision or hub.DEFAULT_REVISION,
        commit_sha=got.commit_sha,
    )
    if got.fallback:
        source.notes.append(f"{got.fallback}: used the cached config.json of commit {got.commit_sha[:12]}")
    if read_safetensors:
        online = got.fallback is None and not hub.offline()
        try:
            found = hub.stored_bytes(repo_id, got.commit_sha, token, cache_root(), online=online, revision=rev)
        except hub.HeadersUnavailable as exc:
            source.notes.append(f"stored bytes unknown: {exc}")
        else:
            if found is not None:
                source.stored_bytes, source.non_float_weight = found.bytes_by_dtype, found.non_float_weight
                disagree = total_size_note(found.index_total_size, found.bytes_by_dtype)
                if disagree:
                    source.notes.append(disagree)
            elif online:
                source.notes.append(
                    hub.why_no_safetensors(repo_id, got.commit_sha, token)
                    or "the repo has no safetensors weights: stored bytes unknown"
                )
            else:
                source.notes.append("stored bytes unknown: the hub was not asked and no earlier run recorded them")
    return source
