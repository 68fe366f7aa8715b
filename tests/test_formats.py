from math import ceil

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qcli.errors import UsageError
from qcli.plan.formats import BF16, FP4, FP16, FP32, INT8, NF4, NF4_DQ, parse_format, storage_bytes, storage_parts


def test_4bit_formula_matches_design_table():
    n = 4096 * 4096
    assert storage_bytes(NF4, n, 4096) == ceil(n / 2) + 4 * ceil(n / 64) + 64
    assert storage_bytes(NF4_DQ, n, 4096) == ceil(n / 2) + ceil(n / 64) + 4 * ceil(ceil(n / 64) / 256) + 1024 + 64 + 4
    assert storage_bytes(FP4, n, 4096) == storage_bytes(NF4, n, 4096)


def test_int8_has_one_scale_per_output_row():
    assert storage_bytes(INT8, 4096 * 11008, 11008) == 4096 * 11008 + 4 * 11008


def test_dense_bytes():
    assert storage_bytes(FP32, 10, 1) == 40
    assert storage_bytes(FP16, 10, 1) == storage_bytes(BF16, 10, 1) == 20


def test_bits_per_param_of_large_tensors():
    n = 8192 * 8192
    assert storage_bytes(NF4, n, 8192) * 8 / n == pytest.approx(4.5, abs=1e-5)
    assert storage_bytes(NF4_DQ, n, 8192) * 8 / n == pytest.approx(4.127, abs=1e-3)
    saved = (storage_bytes(NF4, n, 8192) - storage_bytes(NF4_DQ, n, 8192)) * 8 / n
    assert saved == pytest.approx(0.373, abs=1e-3)  # the QLoRA paper's figure


def test_parse_format():
    assert parse_format("4") == NF4
    assert parse_format("4", double_quant=True) == NF4_DQ
    assert parse_format("fp4", True).double_quant
    assert parse_format("16") == FP16 and parse_format("bf16") == BF16 and parse_format("int8") == INT8
    # The ecosystem's other spellings (accelerate's int4, BitsAndBytesConfig's 4bit) mean the same formats.
    assert parse_format("int4") == parse_format("4bit") == parse_format("INT4") == NF4
    assert parse_format("8bit") == INT8 and parse_format("torch.bfloat16") == BF16
    for bad in ("3", "2", "int3", "", "64", "4bits"):
        with pytest.raises(UsageError):
            parse_format(bad)
    with pytest.raises(UsageError):
        parse_format("8", double_quant=True)


sizes = st.integers(min_value=1, max_value=10**12)


@given(sizes, sizes)
def test_total_rises_with_params(a, b):
    lo, hi = sorted((a, b))
    for fmt in (FP32, BF16, INT8, NF4, NF4_DQ):
        assert storage_bytes(fmt, lo, 1) <= storage_bytes(fmt, hi, 1)


@given(st.integers(min_value=1024, max_value=10**12))
def test_total_rises_with_bits(n):
    rows = max(1, int(n**0.5))
    order = [NF4, INT8, BF16, FP32]
    costs = [storage_bytes(f, n, rows) for f in order]
    assert costs == sorted(costs)


# Double quantization costs 1,092 bytes of per-tensor constants and saves 3 bytes per 64-block,
# so it pays off from about 23k elements: every real weight matrix is far larger.
@given(st.integers(min_value=24_000, max_value=10**13))
def test_double_quant_is_never_larger_for_real_tensors(n):
    assert storage_bytes(NF4_DQ, n, 1) <= storage_bytes(NF4, n, 1)


def test_double_quant_costs_more_on_tiny_tensors():
    assert storage_bytes(NF4_DQ, 4096, 64) > storage_bytes(NF4, 4096, 64)


def test_parts_add_up():
    for fmt in (NF4, NF4_DQ, INT8, BF16):
        assert sum(b for _, b in storage_parts(fmt, 12345, 7)) == storage_bytes(fmt, 12345, 7)
