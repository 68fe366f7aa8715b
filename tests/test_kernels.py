"""A forward pass that fails on bitsandbytes' CPU 4-bit kernel names that kernel's shape limit as its cause.

Real transformers + bitsandbytes, quantized on the CPU. Whether bitsandbytes takes its repacking CPU path
depends on the CPU (AVX512-BF16); the tests switch it on per module (`support_avx512bf16_for_cpu`, the flag
bitsandbytes sets from the hardware), so they check the same thing on every machine.
"""

from __future__ import annotations

import pytest

from tests.conftest import save_tiny_llama

torch = pytest.importorskip("torch")
pytest.importorskip("bitsandbytes")


def _nf4(path):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    qcfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=qcfg, device_map="cpu").eval()
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = True
    return model


def test_narrow_4bit_layers_on_the_cpu_kernel_are_named_as_the_cause(tmp_path):
    from qcli.run.checks import forward_finite
    from qcli.run.kernels import cpu_4bit_misfits, failure_text

    model = _nf4(save_tiny_llama(tmp_path / "narrow"))  # hidden 32: every attention projection is 32 wide
    misfits = cpu_4bit_misfits(model)
    assert "model.layers.0.self_attn.q_proj (32 → 32)" in misfits
    assert not any("mlp.down_proj" in m for m in misfits)  # 64 → 32: both multiples, it repacks
    with pytest.raises(RuntimeError) as caught, torch.no_grad():
        model(torch.tensor([[1, 2, 3]]))
    text = failure_text(caught.value, model)
    assert text.startswith("bitsandbytes' CPU 4-bit kernel cannot run model.layers.0.self_attn.q_proj (32 → 32)")
    assert f"and {len(misfits) - 1} more" in text and "in_features % 64 == 0" in text
    assert failure_text(None, model) == text  # the load report's note, before any forward pass

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({"[UNK]": 0, "the": 1, "fox": 2}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words)

    check = forward_finite(model, tokenizer, "cpu")
    assert check.error and "CPU 4-bit kernel cannot run" in check.detail


def test_other_failures_keep_their_own_words(tmp_path):
    from qcli.run.kernels import cpu_4bit_misfits, failure_text

    model = _nf4(save_tiny_llama(tmp_path / "narrow"))
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False  # the generic CPU path: no shape limit
    assert cpu_4bit_misfits(model) == []
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()
    assert failure_text(ValueError("bad\nsecond line"), model) == "ValueError: bad"
    assert failure_text(None, model) == ""
