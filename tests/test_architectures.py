"""Analytic parameter counts: published figures, and the meta-device build of the real class."""

import pytest

from qcli.model.describe import from_config
from qcli.model.meta import from_meta
from tests.conftest import fixture_config

PUBLISHED = {
    "llama3-8b": 8_030_261_248,
    "mistral-7b-v0.1": 7_241_732_096,
    "mixtral-8x7b": 46_702_792_704,
    "qwen2.5-7b": 7_615_616_512,
    "gemma-2-9b": 9_241_705_984,
    "phi-3-mini-4k": 3_821_079_552,
    "gpt2": 124_439_808,
    "falcon-7b": 6_921_720_704,
}

TINY = {
    "qwen2_moe": {
        "model_type": "qwen2_moe",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 100,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 64,
        "decoder_sparse_step": 2,
    },
    "qwen3_moe": {
        "model_type": "qwen3_moe",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "vocab_size": 100,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
    },
    "qwen3": {
        "model_type": "qwen3",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "vocab_size": 100,
        "tie_word_embeddings": True,
    },
    "gemma": {
        "model_type": "gemma",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "vocab_size": 100,
    },
    "gemma3_text": {
        "model_type": "gemma3_text",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 6,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "vocab_size": 100,
        "sliding_window": 32,
    },
    "phi": {
        "model_type": "phi",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 100,
    },
    "gpt_neox": {
        "model_type": "gpt_neox",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 100,
    },
    "opt": {
        "model_type": "opt",
        "hidden_size": 64,
        "ffn_dim": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 100,
        "max_position_embeddings": 64,
        "word_embed_proj_dim": 32,
    },
    "bert": {
        "model_type": "bert",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 100,
        "max_position_embeddings": 64,
    },
    "falcon-new-arch": {
        "model_type": "falcon",
        "hidden_size": 64,
        "num_attention_heads": 8,
        "num_kv_heads": 2,
        "num_hidden_layers": 2,
        "vocab_size": 100,
        "new_decoder_architecture": True,
    },
    "llama-tied-bias": {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "vocab_size": 100,
        "tie_word_embeddings": True,
        "attention_bias": True,
        "mlp_bias": True,
    },
}


@pytest.mark.parametrize(("name", "published"), PUBLISHED.items())
def test_analytic_count_equals_published(name, published):
    assert from_config(fixture_config(name)).params == published


def _compare(cfg):
    analytic, meta = from_config(cfg), from_meta(cfg)
    assert analytic.source == "analytic" and meta.source == "meta"
    assert analytic.params == meta.params
    assert analytic.groups() == meta.groups()
    assert analytic.tied_embeddings == meta.tied_embeddings
    assert {t.name: (t.shape, t.role, t.dtype) for t in analytic.tensors} == {
        t.name: (t.shape, t.role, t.dtype) for t in meta.tensors
    }


@pytest.mark.parametrize("name", PUBLISHED)
def test_analytic_equals_meta_device_real_configs(name):
    _compare(fixture_config(name))


@pytest.mark.parametrize("name", TINY)
def test_analytic_equals_meta_device_other_families(name):
    _compare(TINY[name])


def test_meta_fallback_for_unknown_architecture_ties_embeddings():
    cfg = {
        "model_type": "starcoder2",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 100,
        "tie_word_embeddings": True,
    }
    spec = from_config(cfg)
    assert spec.source == "meta"
    assert spec.tied_embeddings
    assert spec.groups()["lm_head"] == 0  # counted once, not twice


def test_llama3_groups_show_the_unquantized_billion():
    groups = from_config(fixture_config("llama3-8b")).groups()
    assert groups["embeddings"] + groups["lm_head"] == 2 * 128256 * 4096  # 1.05 B never quantized
