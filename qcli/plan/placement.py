"""Where an inference load puts each block: accelerate's device map, mirrored in pure Python.

`infer_auto_device_map` / `get_balanced_memory` need a torch model (even on the meta device, importing
accelerate imports torch), and `qcli estimate` never imports torch. So this module re-implements the
algorithm transformers 5 runs for `from_pretrained(device_map=...)` (its own copies in
`transformers/integrations/accelerate.py`, on accelerate's `get_max_layer_size`) over qcli's blocks:
top-level modules, with each decoder layer one no-split block.

- `auto` / `balanced`: `get_balanced_memory` caps every GPU but the last at total/n + a buffer of
  1.25 × max(biggest no-split block, biggest leaf module) — the biggest block here, since a leaf inside
  a layer is smaller than its layer; with one GPU and no user `max_memory`, 90 %.
- `sequential`: each GPU filled up to its `max_memory` before the next.
- bitsandbytes quantizers take 10 % off every budget (`adjust_max_memory`).
- The first GPU and the CPU keep room for the largest not-yet-placed block (accelerate's "main devices"),
  so an offloaded layer can be streamed back in.
Default `max_memory` per GPU: its capacity minus the CUDA context (accelerate reads free memory).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from qcli.model.spec import ModelSpec
from qcli.results.plan import LargestLayer

DEVICE_MAPS = ("auto", "balanced", "sequential")
MAX_MEMORY_HINT = "e.g. --max-memory 20GiB (every GPU) or 0=20GiB,1=22GiB,cpu=64GiB"


def parse_max_memory(text: str | None, device_map: str | None) -> dict[int | str, int] | None:
    """Return --max-memory as accelerate's keys (GPU index, "cpu", "disk") to bytes, checked; the one
    reader of the flag for `estimate` and `load`. One bare size is keyed "*" (every GPU).

    accelerate reads max_memory only where it places modules, so the flag needs --device-map.
    """
    from qcli.errors import UsageError
    from qcli.units import parse_bytes

    if text is None:
        return None
    if not text.strip():
        raise UsageError("--max-memory is empty", MAX_MEMORY_HINT)
    if device_map is None:
        raise UsageError(
            "--max-memory budgets what --device-map places, and no --device-map was given",
            "add --device-map auto (or balanced, sequential)",
        )
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 1 and "=" not in parts[0]:
        return {"*": parse_bytes(parts[0], "--max-memory")}
    out: dict[int | str, int] = {}
    for part in parts:
        key, sep, size = (x.strip() for x in part.partition("="))
        # ASCII digits only: str.isdigit() is true for '²' and '٠', which int() refuses or reads as 0.
        gpu = re.fullmatch(r"[0-9]{1,4}", key) is not None
        if not sep or not (gpu or key.lower() in {"cpu", "disk"}):
            raise UsageError(f"--max-memory {part[:40]!r} is not DEVICE=SIZE", MAX_MEMORY_HINT)
        device: int | str = int(key) if gpu else key.lower()
        if device in out:
            raise UsageError(f"--max-memory names {key} twice", MAX_MEMORY_HINT)
        out[device] = parse_bytes(size, "--max-memory")
    return out


_LAYER_RE = re.compile(r"^(.*?\.(?:layers|h|layer|blocks)\.\d+)\.")
BALANCED_BUFFER = 1.25  # get_balanced_memory: buffer = int(1.25 * max(biggest no-split block, biggest leaf))
SINGLE_GPU_SHARE = 0.9  # get_balanced_memory, one GPU and no max_memory given
QUANTIZER_SHARE = 0.9  # transformers' Bnb4Bit/8Bit quantizer adjust_max_memory


def block_of(name: str) -> str:
    """Return the placement block of a tensor: its decoder layer, or its own top-level module."""
    match = _LAYER_RE.match(name)
    if match:
        return match.group(1)
    return name.rsplit(".", 1)[0] if "." in name else name


def is_layer(block: str) -> bool:
    """Return whether a block is a decoder layer (a no-split module for accelerate)."""
    return bool(re.search(r"\.(?:layers|h|layer|blocks)\.\d+$", block))


def largest_layer(spec: ModelSpec, blocks: dict[str, int]) -> LargestLayer | None:
    """Return the biggest block (accelerate's 'largest layer') and DeepSpeed's largest module params."""
    if not blocks:
        return None
    name = max(blocks, key=lambda b: blocks[b])
    params: dict[str, int] = defaultdict(int)
    modules: dict[str, int] = defaultdict(int)
    for t in spec.parameters:
        params[block_of(t.name)] += t.numel
        modules[t.module] += t.numel
    return LargestLayer(
        name=name,
        size_bytes=blocks[name],
        num_params=params.get(name, 0),
        module_params=max(modules.values(), default=0),
    )


@dataclass
class DeviceMap:
    """The device index each block goes to (len(budgets) = CPU offload) and the budgets used."""

    assignment: dict[str, int]
    budgets: list[int]


def balanced_budgets(blocks: dict[str, int], budgets: list[int], user_set: bool) -> list[int]:
    """Return accelerate's get_balanced_memory budgets for the GPUs."""
    budgets = list(budgets)
    if len(budgets) == 1 and not user_set:
        budgets[0] = int(budgets[0] * SINGLE_GPU_SHARE)
    total = sum(blocks.values())
    per_gpu = total // len(budgets) + int(BALANCED_BUFFER * max(blocks.values(), default=0))
    for i in range(len(budgets) - 1):  # the last GPU keeps its whole budget
        budgets[i] = min(per_gpu, budgets[i])
    return budgets


def infer_device_map(
    blocks: dict[str, int], budgets: list[int], mode: str, user_set: bool, quantized: bool
) -> DeviceMap:
    """Return accelerate's placement of the blocks on the GPUs (index len(budgets): offloaded to CPU)."""
    if mode != "sequential":
        budgets = balanced_budgets(blocks, budgets, user_set)
    if quantized:
        budgets = [int(b * QUANTIZER_SHARE) for b in budgets]
    names = list(blocks)
    assignment: dict[str, int] = {}
    used = [0] * len(budgets)
    current = 0
    for i, name in enumerate(names):
        size = blocks[name]
        while current < len(budgets):
            # The first GPU keeps room for the largest block still to place (accelerate's main device).
            reserve = max((blocks[n] for n in names[i + 1 :]), default=0) if current == 0 else 0
            if used[current] + size <= budgets[current] - reserve:
                break
            current += 1
        if current == len(budgets):
            assignment[name] = current  # CPU: accelerate's next device after the GPUs
            continue
        used[current] += size
        assignment[name] = current
    return DeviceMap(assignment, budgets)
