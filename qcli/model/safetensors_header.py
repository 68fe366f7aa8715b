"""Reading and checking a .safetensors header without trusting it.

The format: an 8-byte little-endian header length N, N bytes of UTF-8 JSON mapping tensor names to
{dtype, shape, data_offsets}, then the data. The checks are the ones the safetensors library makes
(its MAX_HEADER_SIZE is 100,000,000 bytes; offsets must tile the data exactly), made here first so a
bad file is one `file: problem` line, and so a FIFO or /dev/zero never blocks or fills memory.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from math import prod
from pathlib import Path

from qcli.errors import UsageError, too_many_digits

# safetensors' own limit on the JSON header (safetensors/src/tensor.rs MAX_HEADER_SIZE).
MAX_HEADER_BYTES = 100_000_000
# Header dtypes -> bits per element (safetensors 0.8's Dtype, sub-byte floats and AMD's FNUZ float8s included).
DTYPE_BITS = {
    "F64": 64, "F32": 32, "F16": 16, "BF16": 16, "I64": 64, "I32": 32, "I16": 16, "I8": 8, "U8": 8,
    "BOOL": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "U16": 16, "U32": 32, "U64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip
DTYPE_BYTES = {k: v // 8 for k, v in DTYPE_BITS.items() if v % 8 == 0}
MAX_RANK = 16
# dtypes that hold no float values: a `*.weight` stored so is no float weight at all (without a
# quantization_config, transformers casts the integers to the load dtype and loads a broken model).
NON_FLOAT_DTYPES = frozenset({"BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64"})


INDEX_NAME = "model.safetensors.index.json"  # transformers' SAFE_WEIGHTS_INDEX_NAME
SINGLE_NAME = "model.safetensors"  # transformers' SAFE_WEIGHTS_NAME


class SafetensorsError(UsageError):
    """A .safetensors file (or its index) that cannot be what it claims: exit 2 naming the file and the problem."""

    def __init__(self, path: Path | str, problem: str, what: str = "safetensors file") -> None:
        super().__init__(f"{path}: not a valid {what}: {problem}", "re-download or re-save the checkpoint")


def _regular_file_size(path: Path, what: str = "safetensors file") -> int:
    try:
        st = path.stat()  # follows symlinks; a loop is ELOOP
    except OSError as exc:
        raise SafetensorsError(path, exc.strerror or type(exc).__name__, what) from None
    if not stat.S_ISREG(st.st_mode):
        raise SafetensorsError(path, "not a regular file (a directory, FIFO or device)", what)
    return st.st_size


def read_header(path: Path) -> dict[str, tuple[str, tuple[int, ...], int]]:
    """Return {tensor name: (dtype, shape, bytes)} from a checked .safetensors header."""
    size = _regular_file_size(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            length = header_length(path, fh.read(8), size)
            raw = fh.read(length)
    except OSError as exc:
        raise SafetensorsError(path, exc.strerror or type(exc).__name__) from None
    return parse_header(path, raw, size - 8 - length)


def header_length(path: Path | str, start: bytes, size: int | None) -> int:
    """Return the header length a file's first 8 bytes give, checked against safetensors' limit and the
    file's `size` (None: unknown); `path` names the file in errors. The hub path reads the same bytes with a
    Range request and checks them here, so a file on the hub and its local copy get the same message."""
    if (size is not None and size < 8) or len(start) < 8:
        got = size if size is not None and size < 8 else len(start)
        raise SafetensorsError(path, f"{got} bytes, shorter than the 8-byte header length")
    (length,) = struct.unpack("<Q", start[:8])
    if looks_like_html(start) and (length > MAX_HEADER_BYTES or (size is not None and length > size - 8)):
        raise SafetensorsError(path, f"it begins with {start[:8].decode('latin-1')!r}, an HTML page")
    if length > MAX_HEADER_BYTES:
        raise SafetensorsError(path, f"header length {length:,} exceeds {MAX_HEADER_BYTES:,} bytes")
    if size is not None and length > size - 8:
        raise SafetensorsError(path, f"header length {length:,} is longer than the file ({size:,} bytes)")
    return length


def looks_like_html(start: bytes) -> bool:
    """Return whether a file's first bytes are the start of a web page (a login or error page saved, or sent
    by a proxy, where the file should be): its 8-byte header length would then read as a huge number."""
    return start[:8].lstrip().startswith(b"<")


def parse_header(path: Path | str, raw: bytes, data_bytes: int | None) -> dict[str, tuple[str, tuple[int, ...], int]]:
    """Return {tensor name: (dtype, shape, bytes)} of a header's raw JSON bytes, checked (`check_entries`)."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SafetensorsError(path, "the header is not UTF-8") from None
    except (json.JSONDecodeError, RecursionError):
        raise SafetensorsError(path, "the header is not valid JSON") from None
    except ValueError:  # JSONDecodeError's base: an integer past Python's int-digit limit
        raise SafetensorsError(path, f"the header has {too_many_digits()}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(path, "the header is not a JSON object")
    return check_entries(path, header, data_bytes)


def name_problem(name: str) -> str | None:
    """Return why a tensor name is no module path transformers can load ('' or a part such as `layers.²`);
    None when it is one. transformers sorts the names it loads by their dot-separated parts, reading any part
    `str.isdigit()` accepts as an int: `²`, `①` or `٣` pass isdigit() and int() fails on the first two
    (a ValueError mid-load) or reads another digit system; no model's module index is written so."""
    if not name or not name.isprintable():
        return "the name is empty or holds control characters"
    for part in name.split("."):
        if part.isdigit() and not (part.isascii() and part.isdecimal()):
            return f"part {part[:20]!r} of the name is a number in digits other than 0-9 (no module is named so)"
    return None


def check_entries(
    path: Path | str, header: dict, data_bytes: int | None
) -> dict[str, tuple[str, tuple[int, ...], int]]:
    """Return {tensor name: (dtype, shape, bytes)} of a parsed header, checked; `path` names it in errors.

    `data_bytes` is the size of the data after the header; None when unknown (a header read from the hub
    with a Range request), and then only the offsets' own consistency is checked: no overlap and no gap.
    """
    out: dict[str, tuple[str, tuple[int, ...], int]] = {}
    spans: list[tuple[int, int, str]] = []
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise SafetensorsError(path, "__metadata__ must map strings to strings")
    for name, info in header.items():
        if name == "__metadata__":
            continue
        where = f"tensor {name[:80]!r}"
        if (problem := name_problem(name)) is not None:
            raise SafetensorsError(path, f"{where}: {problem}")
        if not isinstance(info, dict):
            raise SafetensorsError(path, f"{where} is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
            raise SafetensorsError(path, f"{where}: unknown dtype {str(dtype)[:20]!r}")
        if not (
            isinstance(shape, list)
            and len(shape) <= MAX_RANK
            and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**63 for d in shape)
        ):
            raise SafetensorsError(path, f"{where}: shape must be a list of non-negative integers")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise SafetensorsError(path, f"{where}: data_offsets must be [begin, end] integers")
        begin, end = offsets
        if not 0 <= begin <= end:
            raise SafetensorsError(path, f"{where}: data_offsets {offsets} are not [begin, end] with begin ≤ end")
        if data_bytes is not None and end > data_bytes:
            raise SafetensorsError(path, f"{where}: data_offsets {offsets} lie outside the {data_bytes:,} data bytes")
        nbits = prod(shape) * DTYPE_BITS[dtype]
        if nbits % 8:  # safetensors refuses it: "the slice does not end up at a byte boundary"
            raise SafetensorsError(
                path, f"{where}: shape {shape} of {dtype} is {nbits:,} bits, not a whole number of bytes"
            )
        nbytes = nbits // 8  # sub-byte types pack into whole bytes
        if end - begin != nbytes:
            raise SafetensorsError(
                path, f"{where}: shape {shape} of {dtype} needs {nbytes:,} bytes, offsets give {end - begin:,}"
            )
        out[name] = (dtype, tuple(shape), nbytes)
        spans.append((begin, end, name))
    _check_tiling(path, spans, data_bytes)
    return out


def _check_tiling(path: Path | str, spans: list[tuple[int, int, str]], data_bytes: int | None) -> None:
    """Raise unless the spans, sorted, follow each other from byte 0 with no overlap or gap and (when
    `data_bytes` is known) end at its last byte: safetensors' own rule (its `validate` sorts the tensors by
    data_offsets, each must begin where the previous one ended, "invalid offset"; the last must end at the
    buffer's end, "incomplete metadata, file not fully covered"). Two tensors on the same bytes would
    otherwise count them twice."""
    at = 0
    for begin, end, name in sorted(spans):
        if begin != at:
            problem = "overlaps the tensor before it" if begin < at else f"leaves a gap after byte {at:,}"
            raise SafetensorsError(
                path, f"tensor {name[:80]!r}: data_offsets [{begin}, {end}] {problem} (they must tile the data)"
            )
        at = end
    if data_bytes is not None and at != data_bytes:
        raise SafetensorsError(path, f"the tensors' data_offsets cover {at:,} of the {data_bytes:,} data bytes")


def checkpoint_files(directory: Path) -> list[Path] | None:
    """Return the safetensors files transformers loads from `directory`: model.safetensors, else the shards
    model.safetensors.index.json lists (checked: each one there, none outside the directory); None when
    there is neither (other *.safetensors files, such as consolidated.safetensors, are not loaded)."""
    single = directory / SINGLE_NAME
    if single.exists():
        return [single]
    index = directory / INDEX_NAME
    if not index.exists():
        return None
    return [directory / name for name in shard_names(index, read_index(index))]


def read_index(index: Path, shown: Path | str | None = None) -> object:
    """Return the parsed JSON of a safetensors index file (a local one, or the hub's downloaded copy, named
    `shown` in errors); its shape is checked by `shard_names`."""
    shown = shown or index
    if _regular_file_size(index, "index") > MAX_HEADER_BYTES:
        raise SafetensorsError(shown, f"larger than {MAX_HEADER_BYTES:,} bytes", "index")
    try:
        return json.loads(index.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SafetensorsError(shown, "not UTF-8 text", "index") from None
    except OSError as exc:
        raise SafetensorsError(shown, exc.strerror or type(exc).__name__, "index") from None
    except (json.JSONDecodeError, RecursionError):
        raise SafetensorsError(shown, "not valid JSON", "index") from None
    except ValueError:  # JSONDecodeError's base: an integer past Python's int-digit limit
        raise SafetensorsError(shown, too_many_digits(), "index") from None


def shard_names(index: Path | str, data: object) -> list[str]:
    """Return the shard file names of a parsed safetensors index, checked (a `weight_map` of names to
    relative file names, no `..`); `index` names it in errors."""
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise SafetensorsError(index, "weight_map must map tensor names to file names", "index")
    if not weight_map:  # transformers would load no shard: every weight newly initialized
        raise SafetensorsError(index, "weight_map is empty: it names no shard to load", "index")
    names = sorted(set(weight_map.values()))
    for name in names:
        parts = name.replace("\\", "/").split("/")
        if not name or name.startswith("/") or ".." in parts or "" in parts:
            raise SafetensorsError(index, f"shard {name[:80]!r} is not a file name in the repo", "index")
    return names


def declared_total_size(data: object) -> int | None:
    """Return an index's `metadata.total_size` (what the saver says the shards hold; transformers only
    reads its weight_map); None when it has none, or not a whole number of bytes."""
    meta = data.get("metadata") if isinstance(data, dict) else None
    total = meta.get("total_size") if isinstance(meta, dict) else None
    if isinstance(total, float) and total.is_integer() and 0 <= total < 2**63:
        total = int(total)  # some savers write 1.5e10 or 123.0
    return total if type(total) is int and total >= 0 else None


def total_size_note(declared: int | None, totals: dict[str, int]) -> str | None:
    """Return a note when an index's metadata.total_size disagrees with the bytes the shards' headers hold
    (the figure reported); None when it agrees or says nothing."""
    held = sum(totals.values())
    if declared is None or declared == held:
        return None
    return (
        f"{INDEX_NAME} says metadata.total_size {declared:,} bytes; the shards' headers hold {held:,} "
        "(reported: the headers are what transformers loads)"
    )


def check_index_covered(index: Path | str, weight_map: dict[str, str], held: set[str]) -> None:
    """Raise a SafetensorsError when a tensor the index's `weight_map` lists is in none of the shards it
    lists (`held`: every tensor name their headers hold). transformers takes the index only for the list of
    shards and loads what their headers hold: such a tensor would be missing, newly initialized, at load."""
    missing = sorted(set(weight_map) - held)
    if missing:
        more = f" and {len(missing) - 1:,} more" if len(missing) > 1 else ""
        raise SafetensorsError(
            index,
            f"weight_map lists {missing[0][:80]!r}{more} in {weight_map[missing[0]][:80]!r}, and no shard it "
            "lists holds it",
            "index",
        )


def stored_bytes(directory: Path) -> dict[str, int] | None:
    """Return the stored bytes per dtype of the safetensors transformers loads from `directory`; None when
    it has neither model.safetensors nor an index. Every *.safetensors header there is checked, loaded or
    not (a bad file is exit 2 before any load), and a shard the index lists and the directory lacks is an
    error."""
    files = checkpoint_files(directory)
    for f in files or []:
        if not f.exists():
            raise UsageError(
                f"{directory}: {INDEX_NAME} lists {f.relative_to(directory)}, which is missing",
                "the checkpoint is incomplete: download or save it again",
            )
    headers = {f: read_header(f) for f in sorted({*directory.glob("*.safetensors"), *(files or [])})}
    if files is None:
        return None
    if files[0].name != SINGLE_NAME:  # shards: the index's tensors are all in them
        weight_map = json.loads((directory / INDEX_NAME).read_text(encoding="utf-8"))["weight_map"]
        check_index_covered(directory / INDEX_NAME, weight_map, {name for f in files for name in headers[f]})
    totals: dict[str, int] = {}
    for f in files:
        for dtype, _, nbytes in headers[f].values():
            totals[dtype] = totals.get(dtype, 0) + nbytes
    return totals


def non_float_weight(
    headers: dict[str, dict[str, tuple[str, tuple[int, ...], int]]],
) -> tuple[str, str, str] | None:
    """Return (file, tensor, dtype) of the first `*.weight` tensor stored as integers or booleans in the checked
    headers of the files transformers loads ({file: entries}, in load order); None when every weight is a float.
    Buffers such as GPT-2's boolean `attn.bias` masks are not weights."""
    for file, entries in headers.items():
        for tensor, (dtype, _, _) in entries.items():
            if tensor.endswith(".weight") and dtype in NON_FLOAT_DTYPES:
                return file, tensor, dtype
    return None
