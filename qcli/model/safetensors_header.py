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

from qcli.errors import UsageError

# safetensors' own limit on the JSON header (safetensors/src/tensor.rs MAX_HEADER_SIZE).
MAX_HEADER_BYTES = 100_000_000
# Header dtypes -> bits per element (safetensors 0.8's Dtype, sub-byte floats included).
DTYPE_BITS = {
    "F64": 64, "F32": 32, "F16": 16, "BF16": 16, "I64": 64, "I32": 32, "I16": 16, "I8": 8, "U8": 8,
    "BOOL": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8, "U16": 16, "U32": 32, "U64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip
DTYPE_BYTES = {k: v // 8 for k, v in DTYPE_BITS.items() if v % 8 == 0}
MAX_RANK = 16


class SafetensorsError(UsageError):
    """A .safetensors file that cannot be what it claims: exit 2 naming the file and the problem."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: not a valid safetensors file: {problem}", "re-download or re-save the checkpoint")


def _regular_file_size(path: Path) -> int:
    try:
        st = path.stat()  # follows symlinks; a loop is ELOOP
    except OSError as exc:
        raise SafetensorsError(path, exc.strerror or type(exc).__name__) from None
    if not stat.S_ISREG(st.st_mode):
        raise SafetensorsError(path, "not a regular file (a directory, FIFO or device)")
    return st.st_size


def read_header(path: Path) -> dict[str, tuple[str, tuple[int, ...], int]]:
    """Return {tensor name: (dtype, shape, bytes)} from a checked .safetensors header."""
    size = _regular_file_size(path)
    if size < 8:
        raise SafetensorsError(path, f"{size} bytes, shorter than the 8-byte header length")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > MAX_HEADER_BYTES:
                raise SafetensorsError(path, f"header length {length:,} exceeds {MAX_HEADER_BYTES:,} bytes")
            if length > size - 8:
                raise SafetensorsError(path, f"header length {length:,} is longer than the file ({size:,} bytes)")
            raw = fh.read(length)
    except OSError as exc:
        raise SafetensorsError(path, exc.strerror or type(exc).__name__) from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SafetensorsError(path, "the header is not UTF-8") from None
    except (json.JSONDecodeError, RecursionError):
        raise SafetensorsError(path, "the header is not valid JSON") from None
    if not isinstance(header, dict):
        raise SafetensorsError(path, "the header is not a JSON object")
    return _entries(path, header, size - 8 - length)


def _entries(path: Path, header: dict, data_bytes: int) -> dict[str, tuple[str, tuple[int, ...], int]]:
    out: dict[str, tuple[str, tuple[int, ...], int]] = {}
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise SafetensorsError(path, "__metadata__ must map strings to strings")
    for name, info in header.items():
        if name == "__metadata__":
            continue
        where = f"tensor {name[:80]!r}"
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
        if not 0 <= begin <= end <= data_bytes:
            raise SafetensorsError(path, f"{where}: data_offsets {offsets} lie outside the {data_bytes:,} data bytes")
        nbytes = -(-prod(shape) * DTYPE_BITS[dtype] // 8)  # sub-byte types pack into whole bytes
        if end - begin != nbytes:
            raise SafetensorsError(
                path, f"{where}: shape {shape} of {dtype} needs {nbytes:,} bytes, offsets give {end - begin:,}"
            )
        out[name] = (dtype, tuple(shape), nbytes)
    return out


def stored_bytes(directory: Path) -> dict[str, int]:
    """Return the stored bytes per safetensors dtype over every *.safetensors file of a directory (checked)."""
    totals: dict[str, int] = {}
    for f in sorted(directory.glob("*.safetensors")):
        for dtype, _, nbytes in read_header(f).values():
            totals[dtype] = totals.get(dtype, 0) + nbytes
    return totals
