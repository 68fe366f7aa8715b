"""The typed fields of the analytic families' transformers 5 config classes (strict dataclasses): a null, or a value
of another kind, makes transformers refuse the config when it loads it. Generated from the config classes'
annotations (fields typed bool, int, float or str, no None); tests/test_real_configs.py checks it against them."""

from __future__ import annotations

from typing import Any

from qcli.errors import UsageError
from qcli.model.config_schema import shown

# model_type -> kind -> the fields of that kind, space-separated ("number": int or float)
STRICT_FIELDS: dict[str, dict[str, str]] = {
    "deepseek_v3": {
        "bool": "output_router_logits use_cache tie_word_embeddings attention_bias",
        "number": (
            "vocab_size hidden_size intermediate_size moe_intermediate_size num_hidden_layers "
            "num_attention_heads n_shared_experts n_routed_experts routed_scaling_factor kv_lora_rank "
            "qk_rope_head_dim qk_nope_head_dim max_position_embeddings initializer_range rms_norm_eps "
            "num_mtp_layers"
        ),
        "str": "hidden_act",
    },
    "falcon": {
        "bool": "use_cache tie_word_embeddings",
        "number": (
            "vocab_size hidden_size num_hidden_layers num_attention_heads initializer_range max_position_embeddings"
        ),
    },
    "gemma": {
        "bool": "use_cache tie_word_embeddings attention_bias",
        "number": (
            "vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads "
            "num_key_value_heads head_dim max_position_embeddings initializer_range rms_norm_eps"
        ),
        "str": "hidden_act",
    },
    "gemma2": {
        "bool": "use_cache tie_word_embeddings attention_bias",
        "number": (
            "vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads "
            "num_key_value_heads head_dim max_position_embeddings initializer_range rms_norm_eps "
            "query_pre_attn_scalar"
        ),
        "str": "hidden_activation",
    },
    "gemma3_text": {
        "bool": "use_cache tie_word_embeddings attention_bias",
        "number": (
            "vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads "
            "num_key_value_heads head_dim max_position_embeddings initializer_range rms_norm_eps "
            "query_pre_attn_scalar"
        ),
        "str": "hidden_activation",
    },
    "gpt2": {
        "bool": (
            "summary_use_proj summary_proj_to_labels scale_attn_weights use_cache "
            "scale_attn_by_inverse_layer_idx reorder_and_upcast_attn add_cross_attention tie_word_embeddings"
        ),
        "number": "vocab_size n_positions n_embd n_layer n_head layer_norm_epsilon initializer_range",
        "str": "activation_function summary_type",
    },
    "gpt_neox": {
        "bool": "use_cache tie_word_embeddings use_parallel_residual attention_bias is_decoder",
        "number": (
            "vocab_size hidden_size num_hidden_layers num_attention_heads intermediate_size "
            "max_position_embeddings initializer_range layer_norm_eps"
        ),
        "str": "hidden_act",
    },
    "gpt_oss": {
        "bool": "tie_word_embeddings output_router_logits use_cache attention_bias",
        "number": (
            "num_hidden_layers num_local_experts vocab_size hidden_size intermediate_size head_dim "
            "num_attention_heads num_key_value_heads initializer_range max_position_embeddings rms_norm_eps "
            "num_experts_per_tok swiglu_alpha swiglu_limit router_aux_loss_coef"
        ),
        "str": "hidden_act",
    },
    "llama": {
        "bool": "use_cache tie_word_embeddings attention_bias mlp_bias",
        "number": (
            "vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads "
            "max_position_embeddings initializer_range rms_norm_eps"
        ),
        "str": "hidden_act",
    },
    "mistral": {
        "bool": "use_cache tie_word_embeddings",
        "number": (
            "vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads "
            "num_key_value_heads max_position_embeddings initializer_range rms_norm_eps"
        ),
        "str": "hidden_act",
    },
    "mixtral": {
        "bool": "use_cache tie_word_embeddings output_router_logits",
        "number": (
            "vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads "
            "num_key_value_heads max_position_embeddings initializer_range rms_norm_eps num_experts_per_tok "
            "num_local_experts router_aux_loss_coef router_jitter_noise"
        ),
        "str": "hidden_act",
    },
    "opt": {
        "bool": "do_layer_norm_before use_cache enable_bias layer_norm_elementwise_affine tie_word_embeddings",
        "number": (
            "vocab_size hidden_size num_hidden_layers ffn_dim max_position_embeddings num_attention_heads init_std"
        ),
        "str": "activation_function",
    },
    "phi": {
        "bool": "use_cache tie_word_embeddings qk_layernorm",
        "number": (
            "vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads "
            "max_position_embeddings initializer_range layer_norm_eps"
        ),
        "str": "hidden_act",
    },
    "phi3": {
        "bool": "use_cache tie_word_embeddings",
        "number": (
            "vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads "
            "max_position_embeddings original_max_position_embeddings initializer_range rms_norm_eps"
        ),
        "str": "hidden_act",
    },
    "qwen2": {
        "bool": "use_cache tie_word_embeddings use_sliding_window",
        "number": (
            "vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads "
            "max_position_embeddings initializer_range rms_norm_eps max_window_layers"
        ),
        "str": "hidden_act",
    },
    "qwen2_moe": {
        "bool": "use_cache tie_word_embeddings use_sliding_window norm_topk_prob output_router_logits qkv_bias",
        "number": (
            "vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads "
            "max_position_embeddings initializer_range rms_norm_eps max_window_layers decoder_sparse_step "
            "moe_intermediate_size shared_expert_intermediate_size num_experts_per_tok num_experts "
            "router_aux_loss_coef"
        ),
        "str": "hidden_act",
    },
    "qwen3": {
        "bool": "use_cache tie_word_embeddings attention_bias use_sliding_window",
        "number": (
            "vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads head_dim "
            "max_position_embeddings initializer_range rms_norm_eps max_window_layers"
        ),
        "str": "hidden_act",
    },
    "qwen3_moe": {
        "bool": ("use_cache tie_word_embeddings attention_bias use_sliding_window norm_topk_prob output_router_logits"),
        "number": (
            "vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads "
            "num_key_value_heads max_position_embeddings initializer_range rms_norm_eps decoder_sparse_step "
            "moe_intermediate_size num_experts_per_tok num_experts router_aux_loss_coef"
        ),
        "str": "hidden_act",
    },
}


def _special(value: Any) -> bool:
    """Return whether a value is transformers 5's spelling of a non-finite float ({"__float__": "Infinity"})."""
    return isinstance(value, dict) and set(value) == {"__float__"}


def _number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) or _special(value)


def strict_fields(model_type: str) -> dict[str, str]:
    """Return field -> kind ("bool", "number", "str") for a family's config class; empty when unknown."""
    return {name: kind for kind, names in STRICT_FIELDS.get(model_type, {}).items() for name in names.split()}


def check_strict_fields(cfg: dict[str, Any]) -> None:
    """Refuse a config.json whose typed fields transformers' strict config class refuses: null in a field typed
    without None, a non-bool in a bool field, a non-string in a str field. (A whole-number float in an int field is
    left to the note qcli adds.)"""
    for name, kind in strict_fields(str(cfg.get("model_type"))).items():
        if name not in cfg:
            continue
        value = cfg[name]
        ok = (
            value is not None
            and (kind != "bool" or isinstance(value, bool))
            and (kind != "str" or isinstance(value, str))
            and (kind != "number" or _number(value))
        )
        if not ok:
            want = {"bool": "true or false", "number": "a number", "str": "a string"}[kind]
            raise UsageError(
                f"config.json: {name} must be {want}, got {shown(value)}; transformers' "
                f"{cfg.get('model_type')} config class refuses it when loading the config",
                f"fix {name}, or remove it to take the default",
            )
