"""What a model repo or directory holds when it is not what qcli reads (no top-level config.json, or no
model.safetensors / model.safetensors.index.json): a PEFT adapter, a model in a subfolder, Mistral's own
format, a diffusers pipeline, GGUF or PyTorch .bin weights. The hub path and a local directory give the
same words; each passes its file list ({path: size}) and a reader of a small JSON file (None: unreadable)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from qcli.model.safetensors_header import declared_total_size

ReadJson = Callable[[str], object]
_BIN = re.compile(r"pytorch_model(-\d+-of-\d+)?\.bin")
GGUF_HINT = "qcli sizes safetensors, and transformers loads a GGUF file only when named (gguf_file=…), dequantized"


def shown_files(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(n[:80] for n in names[:limit])
    return shown + (f" and {len(names) - limit:,} more" if len(names) > limit else "")


def no_config(
    files: dict[str, int], read_json: ReadJson, subfolder_hint: Callable[[str], str], what: str
) -> tuple[str, str]:
    """Return (what it holds instead of a top-level config.json, a hint); `what` is "repo" or "directory"."""
    names = sorted(files)
    if "adapter_config.json" in files:
        data = read_json("adapter_config.json")
        base = data.get("base_model_name_or_path") if isinstance(data, dict) else None
        kind = data.get("peft_type") if isinstance(data, dict) and isinstance(data.get("peft_type"), str) else None
        held = f"it holds adapter_config.json: a PEFT {kind[:20] + ' ' if kind else ''}adapter, not a model"
        if isinstance(base, str) and base.strip():
            return held, f"estimate its base model, {base[:100]!r}; the adapter adds little memory"
        return held, "estimate the base model it was trained on; the adapter adds little memory"
    nested = [n for n in names if n.endswith("/config.json")]
    if nested:
        return f"it has {shown_files(nested)} in a subfolder", subfolder_hint(nested[0].rsplit("/", 1)[0])
    if "params.json" in files and "consolidated.safetensors" in files:
        return (
            "it holds params.json and consolidated.safetensors: Mistral's own format, which transformers does not load",
            "look for the transformers version of the model (with a config.json), or use mistral-inference or "
            "vLLM (--tokenizer-mode mistral)",
        )
    if "model_index.json" in files:
        return (
            "it holds model_index.json: a diffusers pipeline, not a transformers model",
            "qcli plans transformers LLMs",
        )
    ggufs = [n for n in names if n.endswith(".gguf")]
    if ggufs:
        return f"it holds GGUF files ({shown_files(ggufs)})", GGUF_HINT
    if not names:
        return f"the {what} is empty", "point at a saved transformers model"
    return f"it holds {shown_files(names, 5)}", "is it a transformers model?"


def no_safetensors(files: dict[str, int], read_json: ReadJson, what: str, where: str) -> str:
    """Return the note for a `what` ("repo", "directory") without model.safetensors or its index: the weights
    it has instead (GGUF, PyTorch .bin with their index's metadata.total_size or their size `where` they
    are, a PEFT adapter, safetensors transformers does not load) or none."""
    names = sorted(files)
    bins = [n for n in names if _BIN.fullmatch(n)]
    if bins:
        note = f"stored bytes unknown: the {what} has PyTorch .bin weights ({shown_files(bins)}), no safetensors"
        total = declared_total_size(read_json("pytorch_model.bin.index.json")) if len(bins) > 1 else None
        if total is not None:
            return f"{note}; pytorch_model.bin.index.json gives metadata.total_size {total:,} bytes"
        return f"{note}; the .bin files are {sum(files[n] for n in bins):,} bytes {where} (pickled tensors)"
    ggufs = [n for n in names if n.endswith(".gguf")]
    if ggufs:
        return f"stored bytes unknown: the {what} has GGUF weights ({shown_files(ggufs)}), not safetensors; {GGUF_HINT}"
    others = [n for n in names if n.endswith(".safetensors")]
    if "adapter_model.safetensors" in others:
        return (
            f"stored bytes unknown: the {what} holds adapter_model.safetensors, a PEFT adapter, not the model's weights"
        )
    if others:
        return (
            f"stored bytes unknown: the {what}'s safetensors ({shown_files(others)}) are not model.safetensors or "
            "the shards of model.safetensors.index.json, the files transformers loads"
        )
    return f"stored bytes unknown: the {what} has no weights files (no safetensors, .bin or .gguf)"


def has_weights(files: dict[str, int]) -> bool:
    """Return whether any of the files is a weights file (.safetensors, .bin, .gguf)."""
    return any(n.endswith((".safetensors", ".bin", ".gguf")) for n in files)


def local_files(directory: Path, limit: int = 10_000) -> dict[str, int]:
    """Return {relative path: size} of a directory's files and its subfolders' (one level down, at most
    `limit` entries: enough to say what it holds without walking a whole disk)."""
    out: dict[str, int] = {}
    try:
        entries = sorted(directory.iterdir())[:limit]
        for entry in entries:
            if entry.is_file():
                out[entry.name] = entry.stat().st_size
            elif entry.is_dir() and not entry.name.startswith("."):
                for sub in sorted(entry.iterdir())[:limit]:
                    if sub.is_file():
                        out[f"{entry.name}/{sub.name}"] = sub.stat().st_size
    except OSError:
        pass
    return out


def read_local_json(directory: Path) -> ReadJson:
    """Return a reader of a directory's small JSON files (None when missing, too large or not JSON)."""
    import json

    def read(name: str) -> object:
        path = directory / name
        try:
            if not path.is_file() or path.stat().st_size > 10_000_000:
                return None
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return None

    return read
