"""The storage formula against real bitsandbytes, to the byte (CPU quantization, bnb >= 0.48)."""

import pytest

torch = pytest.importorskip("torch")
bnb_f = pytest.importorskip("bitsandbytes.functional")

from qcli.plan.formats import FP4, INT8, NF4, NF4_DQ, storage_bytes  # noqa: E402


def _nbytes(t) -> int:
    return t.numel() * t.element_size()


def quant_state_bytes(packed, state) -> int:
    total = _nbytes(packed) + _nbytes(state.absmax) + _nbytes(state.code)
    if state.nested:
        total += _nbytes(state.offset) + _nbytes(state.state2.absmax) + _nbytes(state.state2.code)
    return total


@pytest.mark.parametrize("shape", [(4096, 4096), (1024, 4096), (100, 37), (64, 64), (3, 5), (257, 1031)])
@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_4bit_formula_equals_bitsandbytes(shape, double_quant, quant_type):
    weight = torch.randn(*shape, dtype=torch.bfloat16)
    packed, state = bnb_f.quantize_4bit(weight, blocksize=64, compress_statistics=double_quant, quant_type=quant_type)
    fmt = NF4_DQ if double_quant else (NF4 if quant_type == "nf4" else FP4)
    if double_quant and quant_type == "fp4":
        from qcli.plan.formats import Format

        fmt = Format("fp4", "4bit", double_quant=True)
    assert quant_state_bytes(packed, state) == storage_bytes(fmt, weight.numel(), shape[0])


def test_int8_formula_equals_bitsandbytes():
    import bitsandbytes as bnb

    layer = bnb.nn.Linear8bitLt(256, 384, bias=False, has_fp16_weights=False)
    layer.weight = bnb.nn.Int8Params(
        torch.randn(384, 256, dtype=torch.float16), requires_grad=False, has_fp16_weights=False
    )
    layer = layer.to("cpu")
    layer.weight = layer.weight._quantize("cpu") if layer.weight.dtype != torch.int8 else layer.weight
    w = layer.weight
    assert w.dtype == torch.int8
    assert _nbytes(w) + _nbytes(w.SCB) == storage_bytes(INT8, 384 * 256, 384)
