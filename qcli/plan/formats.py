"""Precision formats and their exact storage cost per tensor. Pure Python: the one place
the storage formula of each format lives, used by the planner, the loader's check and the tests.

The figures are bitsandbytes 0.50's (checked against `bitsandbytes.functional.quantize_4bit`
and `Linear8bitLt` on a real install; tests/test_formats_bnb.py re-checks them to the byte).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil
from typing import Literal, get_args

from qcli.errors import UsageError

# torch dtype name -> bytes per element. The dtypes a preset or config may name.
DTYPE_BYTES: dict[str, int] = {
    "float32": 4, "float16": 2, "bfloat16": 2, "float64": 8,
    "int8": 1, "uint8": 1, "int32": 4, "int64": 8, "bool": 1,
    "float8_e4m3fn": 1, "float8_e5m2": 1,
}  # fmt: skip
# The dtypes a model can be loaded in (`--dtype`, a preset's `dtype`, 4-bit compute): the one list.
LoadDtype = Literal["float32", "float16", "bfloat16"]
LOAD_DTYPES: tuple[str, ...] = get_args(LoadDtype)
DTYPE_ALIASES: dict[str, str] = {
    "fp32": "float32", "float": "float32", "float32": "float32",
    "fp16": "float16", "half": "float16", "float16": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
}  # fmt: skip

# bitsandbytes quantize_4bit: one absmax per 64-element block (its default blocksize; transformers'
# BitsAndBytesConfig does not expose another).
BLOCKSIZE_4BIT = 64
# Double quantization quantizes the absmax values in blocks of 256 (quantize_blockwise default).
NESTED_BLOCKSIZE = 256
CODE_4BIT_BYTES = 16 * 4  # the NF4/FP4 lookup table: 16 fp32 values, one per quantized tensor
NESTED_CODE_BYTES = 256 * 4  # the 8-bit dynamic map of the nested absmax: 256 fp32, per tensor
OFFSET_BYTES = 4  # fp32 mean subtracted from absmax before the nested quantization
SCB_BYTES_PER_ROW = 4  # LLM.int8: one fp32 scale per output row (Int8Params.SCB)

FormatKind = Literal["dense", "int8", "4bit"]
# (component kind, bytes): the kinds are qcli.results.plan.ComponentKind values.
Part = tuple[str, int]


@dataclass(frozen=True)
class Format:
    """A storage format for quantizable weights."""

    name: str  # fp32, fp16, bf16, int8, nf4, fp4
    kind: FormatKind
    dtype: str | None = None  # torch dtype name, dense formats only
    double_quant: bool = False

    @property
    def key(self) -> str:
        """Return the stable identifier used in JSON: 'nf4+dq' for double-quantized NF4."""
        return f"{self.name}+dq" if self.double_quant else self.name

    @property
    def label(self) -> str:
        if self.kind == "4bit":
            return f"{self.name} + double quant" if self.double_quant else self.name
        if self.kind == "int8":
            return "int8 (LLM.int8)"
        return self.name

    @property
    def nominal_bits(self) -> int:
        return {"4bit": 4, "int8": 8}.get(self.kind) or 8 * DTYPE_BYTES[self.dtype or "float32"]


FP32 = Format("fp32", "dense", "float32")
FP16 = Format("fp16", "dense", "float16")
BF16 = Format("bf16", "dense", "bfloat16")
INT8 = Format("int8", "int8")
NF4 = Format("nf4", "4bit")
FP4 = Format("fp4", "4bit")
NF4_DQ = Format("nf4", "4bit", double_quant=True)

DENSE_FORMATS: dict[str, Format] = {"float32": FP32, "float16": FP16, "bfloat16": BF16}

# The rows of `qcli estimate` without --bits: one per distinct storage cost.
COMPARISON_FORMATS: tuple[Format, ...] = (FP32, BF16, INT8, NF4, NF4_DQ)

_BY_BITS = {"32": FP32, "fp32": FP32, "16": FP16, "fp16": FP16, "bf16": BF16, "8": INT8, "int8": INT8,
            "4": NF4, "nf4": NF4, "fp4": FP4}  # fmt: skip
# Other spellings people bring from the ecosystem: accelerate's `--dtypes int4 int8`, "4bit"/"8bit" from
# BitsAndBytesConfig's load_in_4bit, torch names. int4 is bitsandbytes' default 4-bit type here: nf4.
_BITS_ALIASES = {"int4": "4", "4bit": "4", "4-bit": "4", "8bit": "8", "8-bit": "8", "float32": "fp32",
                 "float16": "fp16", "half": "fp16", "bfloat16": "bf16", "16bit": "16", "32bit": "32"}  # fmt: skip


def parse_format(bits: str, double_quant: bool = False) -> Format:
    """Return the Format that --bits names (32, 16, 8, 4, fp32, fp16, bf16, int8, int4/4bit, nf4, fp4)."""
    key = bits.strip().lower().removeprefix("torch.")
    fmt = _BY_BITS.get(_BITS_ALIASES.get(key, key))
    if fmt is None:
        raise UsageError(
            f"--bits {bits!r} is not a supported precision",
            "use 32, 16, 8, 4 or one of fp32, fp16, bf16, int8, int4, nf4, fp4",
        )
    if double_quant:
        if fmt.kind != "4bit":
            raise UsageError("--double-quant applies to 4-bit formats only", "use it with --bits 4, nf4 or fp4")
        return Format(fmt.name, "4bit", double_quant=True)
    return fmt


def dtype_bytes(dtype: str) -> int:
    """Return the bytes per element of a torch dtype name (float32, bfloat16, ...)."""
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise UsageError(f"unknown dtype {dtype!r}", f"use one of {', '.join(sorted(DTYPE_BYTES))}") from None


def normalize_dtype(name: str) -> str:
    """Return the torch dtype name for fp16/bf16/fp32 aliases; other names pass through unchanged."""
    return DTYPE_ALIASES.get(name.strip().lower().removeprefix("torch."), name.strip().removeprefix("torch."))


def storage_parts(fmt: Format, numel: int, out_features: int) -> list[Part]:
    """Return the (component kind, bytes) parts one weight tensor of `numel` elements occupies.

    `out_features` is the number of rows (needed for int8's per-row scales). Each part is one tensor
    bitsandbytes allocates, except `quant_nested_code`, which is the 256-entry map and the offset.
    """
    if numel <= 0:
        return []
    if fmt.kind == "dense":
        return [("weights", numel * dtype_bytes(fmt.dtype or "float32"))]
    if fmt.kind == "int8":
        # Linear8bitLt: int8 weight + Int8Params.SCB, one fp32 scale per output row.
        return [("int8_weights", numel), ("int8_row_scales", SCB_BYTES_PER_ROW * out_features)]
    blocks = ceil(numel / BLOCKSIZE_4BIT)
    packed = ("quant_packed_weights", ceil(numel / 2))  # two 4-bit values per uint8
    code = ("quant_code", CODE_4BIT_BYTES)
    if not fmt.double_quant:
        return [packed, ("quant_absmax", 4 * blocks), code]  # fp32 absmax per 64-block
    return [
        packed,
        ("quant_absmax", blocks),  # absmax quantized to uint8
        ("quant_nested_absmax", 4 * ceil(blocks / NESTED_BLOCKSIZE)),  # fp32 per 256 absmax
        ("quant_nested_code", NESTED_CODE_BYTES + OFFSET_BYTES),  # 256 fp32 map + fp32 offset, per tensor
        code,
    ]


def storage_bytes(fmt: Format, numel: int, out_features: int) -> int:
    """Return the exact bytes one weight tensor occupies in `fmt`."""
    return sum(size for _, size in storage_parts(fmt, numel, out_features))


def parse_load_dtype(name: str | None, flag: str = "--dtype") -> str | None:
    """Return the torch dtype name of a load dtype given as fp16/half/bfloat16/torch.float32…, or None."""
    if name is None:
        return None
    dtype = normalize_dtype(name)
    if dtype not in LOAD_DTYPES:
        raise UsageError(f"{flag} {name!r} is not a load dtype", f"use one of {', '.join(LOAD_DTYPES)}")
    return dtype
