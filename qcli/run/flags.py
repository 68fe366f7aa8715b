"""Checks of the load, verify and compare flags that need no model: each runs before anything is
built, loaded or spawned, so a bad flag is exit 2 in well under a second (issue 11). --device and
--max-memory are checked against this machine's CUDA devices (torch imported inside)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from qcli.errors import UsageError
from qcli.model.demo import DEMO_NAME
from qcli.model.resolve import ModelSource
from qcli.model.safetensors_header import INDEX_NAME, SINGLE_NAME, shard_names
from qcli.model.spec import ModelSpec
from qcli.plan.limits import MAX_NEW_TOKENS, check_int
from qcli.plan.placement import DEVICE_MAPS as PLANNED_DEVICE_MAPS

# The strings transformers' from_pretrained passes to accelerate as a device map strategy
# (transformers.modeling_utils): those `estimate` plans, and balanced_low_0, which load also takes.
DEVICE_MAPS = (*PLANNED_DEVICE_MAPS, "balanced_low_0")


def check_device_map(device_map: str | None) -> None:
    """Raise a UsageError unless --device-map is one of accelerate's strategies (None passes)."""
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise UsageError(f"--device-map {device_map[:40]!r} is not a device map", f"use {', '.join(DEVICE_MAPS)}")


def check_prompt(prompt: str | None, flag: str = "--prompt") -> None:
    """Raise a UsageError for a prompt with nothing in it (None passes: the default is used)."""
    if prompt is not None and not prompt.strip():
        raise UsageError(f"{flag} is empty", "give some text, e.g. --prompt 'The capital of France is'")


def check_new_tokens(max_new_tokens: int, spec: ModelSpec | None = None) -> None:
    """Raise a UsageError for a generation length below 1, or longer than the model's context."""
    check_int("--max-new-tokens", max_new_tokens, 1, MAX_NEW_TOKENS)
    context = spec.max_position_embeddings if spec is not None else None
    if isinstance(context, int) and max_new_tokens > context:
        raise UsageError(
            f"--max-new-tokens {max_new_tokens:,} is more than the model's context ({context:,} tokens)",
            f"give at most {context:,}",
        )


def check_text_file(path_text: str, flag: str = "--text") -> str:
    """Return the text of a --text file; a missing, special, empty or one-character file is bad input."""
    path = Path(path_text)
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise UsageError(f"{flag} {path_text[:200]!r} {what}")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UsageError(f"{flag} {path_text[:200]!r} cannot be read ({exc.strerror})") from None
    if len("".join(text.split())) < 2:
        raise UsageError(f"{flag} {path_text[:200]!r} has fewer than two tokens of text", "give a longer text")
    return text


# What transformers' from_pretrained can load weights from (safetensors, PyTorch, TF, Flax, sharded indexes).
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.index.json")


# The weight files transformers' from_pretrained looks for in a hub repo, in its order (single file, then index).
HUB_WEIGHT_FILES = (
    SINGLE_NAME,
    INDEX_NAME,
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _uncached_weights(repo_id: str, revision: str) -> str | None:
    """Return the first weight file transformers would need that the hub cache lacks; None when it has them."""
    from qcli.model.hub import cached_file

    for name in HUB_WEIGHT_FILES:
        path = cached_file(repo_id, name, revision)
        if path is None:
            continue
        if not name.endswith(".index.json"):
            return None
        try:
            shards = shard_names(path, json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return None  # transformers reports a bad index itself
        return next((s for s in shards if cached_file(repo_id, s, revision) is None), None)
    return SINGLE_NAME


def check_weights_present(source: ModelSource) -> None:
    """Raise a UsageError when a local model directory holds no weight file to load, or when offline
    (HF_HUB_OFFLINE) the hub cache holds a repo's config.json without its weights."""
    if source.repo_id is not None:
        from qcli.model.hub import offline

        if offline() and (missing := _uncached_weights(source.repo_id, source.commit_sha or source.revision or "main")):
            raise UsageError(
                f"{source.repo_id}: the weights ({missing}) are not in the local cache and HF_HUB_OFFLINE is set "
                "(offline); only the config is cached",
                f"unset HF_HUB_OFFLINE to fetch them, or download the model first: `hf download {source.repo_id}`",
            )
        return
    directory = source.local_dir
    if directory is None or source.name == DEMO_NAME:
        return
    if not any(next(directory.glob(p), None) for p in WEIGHT_PATTERNS):
        raise UsageError(
            f"{source.name}: no weights in this directory (*.safetensors, *.bin, …)",
            "point at a saved checkpoint, or use `qcli estimate` for the config alone",
        )


def resolve_device(device: str) -> str:
    """Return 'cpu' or 'cuda:N' for --device auto|cpu|cuda|cuda:N; an unavailable device is bad input."""
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    match = re.fullmatch(r"cuda(?::([0-9]{1,4}))?", device)  # ASCII digits: int() also reads "٣" and "３"
    if not match:
        raise UsageError(f"--device {device!r} is not a device", "use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA GPU is available here", "use --device cpu or auto")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return f"cuda:{index}"


def parse_max_memory(text: str | None, device_map: str | None) -> dict[int | str, int] | None:
    """Return accelerate's max_memory (device -> bytes) from --max-memory, checked against this machine's
    CUDA devices (qcli.plan.placement.parse_max_memory reads the flag)."""
    from qcli.plan import placement

    budgets = placement.parse_max_memory(text, device_map)
    if budgets is None:
        return None
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if "*" in budgets:
        if count == 0:
            raise UsageError("--max-memory SIZE budgets each GPU, and this machine has no CUDA device")
        return dict.fromkeys(range(count), budgets["*"])
    gpus = sorted(k for k in budgets if isinstance(k, int))
    if gpus and gpus[-1] >= count:
        raise UsageError(
            f"--max-memory names GPU {gpus[-1]}, and this machine has {count} CUDA device(s)",
            "number GPUs from 0; use cpu= for CPU memory",
        )
    return budgets
