"""Analytic parameter counts: published figures, and the meta-device build of the real class."""

import pytest

from qcli.model.describe import from_config
from qcli.model.meta import from_meta
from qcli.plan.formats import BF16
from qcli.plan.planner import default_skip_modules, kept_in_fp32, kv_per_layer, weight_layout
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
    "falcon-new-arch": {
        "model_type": "falcon",
        "hidden_size": 64,
        "num_attention_heads": 8,
        "num_kv_heads": 2,
        "num_hidden_layers": 2,
        "vocab_size": 100,
        "new_decoder_architecture": True,
    },
    "gpt_oss": {
        "model_type": "gpt_oss",
        "hidden_size": 64,
        "intermediate_size": 48,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "num_local_experts": 4,
        "vocab_size": 100,
        "sliding_window": 32,
    },
    "deepseek_v3": {
        "model_type": "deepseek_v3",
        "hidden_size": 64,
        "intermediate_size": 96,
        "moe_intermediate_size": 16,
        "num_hidden_layers": 3,
        "first_k_dense_replace": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "n_routed_experts": 8,
        "n_shared_experts": 2,
        "num_experts_per_tok": 2,
        "n_group": 2,
        "topk_group": 1,
        "q_lora_rank": 24,
        "kv_lora_rank": 16,
        "qk_nope_head_dim": 8,
        "qk_rope_head_dim": 4,
        "v_head_dim": 8,
        "vocab_size": 100,
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
    # the class load builds, transformers' own skip list, and the cache its own classes store
    assert analytic.model_class == meta.model_class
    assert default_skip_modules(analytic) == default_skip_modules(meta)
    for prefill in (True, False):
        assert kv_per_layer(analytic, 5000, 2, "bfloat16", prefill=prefill) == kv_per_layer(
            meta, 5000, 2, "bfloat16", prefill=prefill
        )


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


def test_encoder_family_is_counted_as_the_causal_lm_class_load_builds():
    cfg = {
        "model_type": "bert",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 100,
        "max_position_embeddings": 64,
    }
    spec = from_config(cfg)
    assert spec.source == "meta" and spec.model_class == "BertLMHeadModel"
    assert any(t.name.startswith("cls.predictions.") for t in spec.tensors)  # the LM head, not the bare encoder


def test_llama3_groups_show_the_unquantized_billion():
    groups = from_config(fixture_config("llama3-8b")).groups()
    assert groups["embeddings"] + groups["lm_head"] == 2 * 128256 * 4096  # 1.05 B never quantized


def test_keep_in_fp32_modules_follow_transformers_dtype_plan():
    # _keep_in_fp32_modules upcast under float16 only; _keep_in_fp32_modules_strict under bfloat16 too.
    oss, ds = from_config(TINY["gpt_oss"]), from_config(TINY["deepseek_v3"])
    assert kept_in_fp32(oss, "float16").search("model.layers.0.input_layernorm.weight")
    assert kept_in_fp32(oss, "bfloat16") is None
    layout = weight_layout(ds, BF16, "bfloat16", None)
    fp32 = [c for c in layout.components if c.kind == "weights" and c.dtype == "float32" and c.group == "buffers"]
    # the router's score-correction bias of the two MoE layers (8 experts), next to the float32 rotary tables
    assert sum(c.size_bytes for c in fp32) == (2 * 8 + 2 * 2) * 4


# Config variants real checkpoints ship that the families' default configs do not exercise (found by fuzzing the
# builders against transformers): each is compared with the meta-device build of the class load builds.
_SMALL = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
          "vocab_size": 101}  # fmt: skip
VARIANTS = {
    # absent keys are the config class's defaults, not "one KV head per query head" / hidden // heads
    "mistral-no-kv-heads": {"model_type": "mistral", **_SMALL, "num_attention_heads": 16},  # 8 KV heads
    "mixtral-no-kv-heads": {"model_type": "mixtral", **_SMALL, "num_attention_heads": 16, "num_local_experts": 2},
    "qwen2-no-kv-heads": {"model_type": "qwen2", **_SMALL, "hidden_size": 256, "num_attention_heads": 64},  # 32
    "qwen3-no-head-dim": {"model_type": "qwen3", **_SMALL, "num_key_value_heads": 2},
    "qwen3_moe-no-kv-heads": {"model_type": "qwen3_moe", **_SMALL, "num_attention_heads": 8, "num_experts": 2,
                              "moe_intermediate_size": 16},  # 4 KV heads
    "gemma-no-head-dim": {"model_type": "gemma", **_SMALL, "num_attention_heads": 2, "num_key_value_heads": 1},
    "gemma2-no-head-dim": {"model_type": "gemma2", **_SMALL, "sliding_window": 8},
    "gpt_oss-no-head-dim": {"model_type": "gpt_oss", **_SMALL, "num_attention_heads": 8, "num_local_experts": 2},
    # biases as each modeling file reads them
    "mistral-attention-bias": {"model_type": "mistral", **_SMALL, "num_key_value_heads": 2, "attention_bias": True},
    "qwen2-attention-bias": {"model_type": "qwen2", **_SMALL, "num_key_value_heads": 2, "attention_bias": True},
    "qwen3-mlp-bias": {"model_type": "qwen3", **_SMALL, "head_dim": 16, "num_key_value_heads": 2, "mlp_bias": True},
    "qwen2_moe-no-qkv-bias": {"model_type": "qwen2_moe", **_SMALL, "num_key_value_heads": 2, "num_experts": 2,
                              "moe_intermediate_size": 16, "shared_expert_intermediate_size": 32,
                              "qkv_bias": False},
    # rotary tables: a partial factor counts for non-default RoPE types (Llama-like) or always (Phi, GPT-NeoX)
    "llama-yarn-partial": {"model_type": "llama", **_SMALL, "partial_rotary_factor": 0.5,
                           "rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                                            "original_max_position_embeddings": 64}},
    "llama-default-partial": {"model_type": "llama", **_SMALL, "partial_rotary_factor": 0.5},
    "gpt_neox-rope-parameters": {"model_type": "gpt_neox", **_SMALL, "partial_rotary_factor": 1.0,
                                 "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                     "partial_rotary_factor": 0.5}},
    "phi3-rope-parameters": {"model_type": "phi3", **_SMALL, "pad_token_id": 0,
                             "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                 "partial_rotary_factor": 0.5}},
    "falcon-alibi": {"model_type": "falcon", **_SMALL, "alibi": True, "multi_query": False},
    "falcon-n_embed": {"model_type": "falcon", **_SMALL, "n_embed": 128, "new_decoder_architecture": True,
                       "num_kv_heads": 2},
    # modules the builders did not know
    "gpt2-cross-attention": {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 101,
                             "n_positions": 64, "add_cross_attention": True},
    "opt-no-affine": {"model_type": "opt", **_SMALL, "ffn_dim": 96, "max_position_embeddings": 64,
                      "layer_norm_elementwise_affine": False, "word_embed_proj_dim": 32},
    "deepseek_v3-no-shared-expert": {**TINY["deepseek_v3"], "n_shared_experts": 0},
}  # fmt: skip


@pytest.mark.parametrize("name", VARIANTS)
def test_analytic_equals_meta_device_config_variants(name):
    _compare(VARIANTS[name])


def test_config_defaults_are_the_config_classes():
    from transformers import AutoConfig

    from qcli.model.architectures import CONFIG_DEFAULTS

    for model_type, defaults in CONFIG_DEFAULTS.items():
        config = AutoConfig.for_model(model_type)
        assert {k: getattr(config, k) for k in defaults} == defaults, model_type


def test_mistral_with_layer_types_is_ministral_to_transformers():
    cfg = {"model_type": "mistral", **_SMALL, "head_dim": 16, "num_key_value_heads": 2, "sliding_window": 8,
           "layer_types": ["sliding_attention", "full_attention"]}  # fmt: skip
    spec = from_config(cfg)
    assert spec.source == "meta" and spec.model_class == "MinistralForCausalLM"


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        ({"model_type": "falcon", **_SMALL, "head_dim": 16}, "head_dim"),
        (
            {"model_type": "phi3", **_SMALL, "pad_token_id": 0,
             "rope_scaling": {"type": "longrope", "short_factor": [1.0] * 3, "long_factor": [1.0] * 8}},
            "short_factor",
        ),
        ({"model_type": "phi3", **_SMALL, "pad_token_id": 0, "rope_scaling": {"type": "linear", "factor": 2.0}},
         "longrope"),
    ],
)  # fmt: skip
def test_configs_transformers_refuses_are_refused(cfg, needle):
    from qcli.errors import UsageError

    with pytest.raises(UsageError, match=needle):
        from_config(cfg)
    with pytest.raises(UsageError):  # and transformers itself cannot load or build it (meta path)
        from_meta(cfg)
