"""Real checkpoints' config.json shapes (written as the hub ships them, layers cut to 2) against transformers' own
build of the class `load` builds, and the configs transformers refuses refused by qcli too (analytic path)."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest

from qcli.errors import UsageError
from qcli.model.describe import from_config
from sweep.run import qcli_answer
from sweep.truth import meta_model, quantized_modules

LLAMA3_ROPE = {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192, "rope_type": "llama3"}  # fmt: skip
REAL: dict[str, dict[str, Any]] = {
    # tied embeddings, head_dim given, llama3 RoPE
    "llama-3.2-1b": {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256,
                     "max_position_embeddings": 131072, "rope_scaling": LLAMA3_ROPE, "rope_theta": 500000.0,
                     "tie_word_embeddings": True, "mlp_bias": False, "attention_bias": False},
    # head_dim 128 where hidden / heads is 160
    "mistral-nemo": {"model_type": "mistral", "hidden_size": 5120, "head_dim": 128, "intermediate_size": 14336,
                     "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8,
                     "vocab_size": 131072, "max_position_embeddings": 1024000, "rope_theta": 1000000.0,
                     "sliding_window": None, "tie_word_embeddings": False},
    # shared expert next to 64 routed ones
    "qwen2-57b-a14b": {"model_type": "qwen2_moe", "hidden_size": 3584, "intermediate_size": 18944,
                       "moe_intermediate_size": 2560, "shared_expert_intermediate_size": 20480,
                       "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
                       "num_experts": 64, "num_experts_per_tok": 8, "norm_topk_prob": False, "vocab_size": 151936,
                       "decoder_sparse_step": 1, "sliding_window": 65536, "use_sliding_window": False,
                       "max_window_layers": 28},
    # longrope with a partial rotary factor (48 factors of a 128-wide head at 0.75), tied
    "phi-4-mini": {"model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
                   "num_attention_heads": 24, "num_key_value_heads": 8, "vocab_size": 200064,
                   "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
                   "partial_rotary_factor": 0.75, "tie_word_embeddings": True, "pad_token_id": 199999,
                   "rope_scaling": {"long_factor": [1.5] * 48, "short_factor": [1.0] * 48, "type": "longrope"},
                   "sliding_window": 262144},
    # word_embed_proj_dim 512 under a hidden size of 1024, post-norm
    "opt-350m": {"model_type": "opt", "hidden_size": 1024, "ffn_dim": 4096, "num_hidden_layers": 24,
                 "num_attention_heads": 16, "vocab_size": 50272, "max_position_embeddings": 2048,
                 "word_embed_proj_dim": 512, "do_layer_norm_before": False},
    "falcon-40b": {"model_type": "falcon", "hidden_size": 8192, "num_attention_heads": 128, "num_hidden_layers": 60,
                   "num_kv_heads": 8, "new_decoder_architecture": True, "parallel_attn": True, "bias": False,
                   "alibi": False, "vocab_size": 65024},
    # DeepSeek-V2-Lite's MLA shape (q_lora_rank null) read as deepseek_v3
    "deepseek-v2-lite-as-v3": {"model_type": "deepseek_v3", "hidden_size": 2048, "intermediate_size": 10944,
                               "moe_intermediate_size": 1408, "num_hidden_layers": 27, "num_attention_heads": 16,
                               "num_key_value_heads": 16, "n_routed_experts": 64, "n_shared_experts": 2,
                               "num_experts_per_tok": 6, "first_k_dense_replace": 1, "q_lora_rank": None,
                               "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
                               "v_head_dim": 128, "vocab_size": 102400, "n_group": 1, "topk_group": 1,
                               "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 0.707,
                                                "mscale_all_dim": 0.707, "original_max_position_embeddings": 4096,
                                                "type": "yarn"}},
    # an old RefinedWeb-named Falcon config: transformers ignores n_layer / n_head and builds its defaults
    "falcon-7b-n_layer": {"model_type": "falcon", "hidden_size": 4544, "n_head": 71, "n_layer": 32,
                          "multi_query": True, "parallel_attn": True, "vocab_size": 65024},
    # both names of one key: the attribute_map alias wins in transformers 5
    "gpt2-both-names": {"model_type": "gpt2", "hidden_size": 128, "n_embd": 256, "n_layer": 2, "num_hidden_layers": 3,
                        "n_head": 8, "vocab_size": 1000},
    "gpt_oss-both-expert-keys": {"model_type": "gpt_oss", "hidden_size": 256, "intermediate_size": 256,
                                 "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
                                 "head_dim": 32, "vocab_size": 1000, "num_local_experts": 4, "num_experts": 2},
}  # fmt: skip


def _tf_config(cfg: dict[str, Any]) -> Any:
    """Return transformers' config object, read from a config.json as `from_pretrained` reads it."""
    from transformers import AutoConfig

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(cfg))
        return AutoConfig.from_pretrained(tmp)


def _two_layers(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    if "num_hidden_layers" in cfg and cfg["num_hidden_layers"] > 2 and cfg["model_type"] != "gpt2":
        cfg["num_hidden_layers"] = 2
    return cfg


@pytest.mark.parametrize("name", REAL)
def test_real_config_counts_what_transformers_builds(name):
    cfg = _two_layers(REAL[name])
    config = _tf_config(cfg)
    model = meta_model(config)
    numel = {n: m.weight.numel() for n, m in model.named_modules() if hasattr(m, "weight")}
    q4 = quantized_modules(config, 4)
    answer = qcli_answer(cfg, 2, 24, "bfloat16")
    assert answer["path"] == "analytic"
    assert answer["params"] == sum(p.numel() for p in model.parameters())
    assert sorted(answer["quantized_4bit"]) == sorted(q4)
    assert answer["quantized_4bit_params"] == sum(numel[m] for m in q4)


def test_falcon_old_names_are_counted_as_built_and_said_so():
    spec = from_config({**REAL["falcon-7b-n_layer"], "n_layer": 60})
    assert spec.attention.layers == 32
    assert any("n_layer" in note and "not 60" in note for note in spec.notes)
    with pytest.raises(UsageError, match="ignores n_head"):  # 8192 hidden over the default 71 heads
        from_config({**REAL["falcon-7b-n_layer"], "hidden_size": 8192, "n_head": 128})


_S = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 8,
      "num_key_value_heads": 2, "vocab_size": 1000}  # fmt: skip
_PHI3 = {"model_type": "phi3", **_S, "num_key_value_heads": 8, "pad_token_id": 0, "max_position_embeddings": 8192,
         "original_max_position_embeddings": 4096}  # fmt: skip
_MOE = {"model_type": "qwen3_moe", **_S, "head_dim": 32, "num_experts": 4, "moe_intermediate_size": 64}
REFUSED = {
    # RoPE: a key the type requires, a type transformers does not know, factors that do not fit the head
    "llama3-no-low-freq": {"model_type": "llama", **_S, "rope_scaling": {
        k: v for k, v in LLAMA3_ROPE.items() if k != "low_freq_factor"}},
    "linear-no-factor": {"model_type": "qwen2", **_S, "rope_scaling": {"type": "linear"}},
    "unknown-rope-type": {"model_type": "gemma", **_S, "head_dim": 32, "rope_scaling": {"type": "ntk", "factor": 2.0}},
    "longrope-wrong-length": {"model_type": "llama", **_S, "rope_scaling": {
        "type": "longrope", "short_factor": [1.0] * 3, "long_factor": [1.0] * 16, "factor": 2.0}},
    "mixtral-yarn-no-head-dim": {"model_type": "mixtral", **_S, "num_local_experts": 2, "rope_scaling": {
        "type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024}},
    # Phi-3-mini-128k's first revision: "su" without original_max_position_embeddings inside the dict
    "phi3-su": {**_PHI3, "rope_scaling": {"type": "su", "short_factor": [1.0] * 16, "long_factor": [1.0] * 16}},
    "phi3-longrope-no-long-factor": {**_PHI3, "rope_scaling": {"type": "longrope", "short_factor": [1.0] * 16}},
    "phi3-head-dim-factors": {**_PHI3, "head_dim": 64, "rope_scaling": {
        "type": "longrope", "short_factor": [1.0] * 16, "long_factor": [1.0] * 16}},
    # strict config fields: a null where the class takes none
    "qwen3_moe-norm_topk_prob-null": {**_MOE, "norm_topk_prob": None},
    "qwen3_moe-decoder_sparse_step-null": {**_MOE, "decoder_sparse_step": None},
    "mixtral-num_experts_per_tok-null": {"model_type": "mixtral", **_S, "num_local_experts": 2,
                                         "num_experts_per_tok": None},
    "llama-tie-null": {"model_type": "llama", **_S, "tie_word_embeddings": None},
    "gemma3-pattern-null": {"model_type": "gemma3_text", **_S, "head_dim": 32, "sliding_window_pattern": None},
    # validate_architecture: hidden size a multiple of the heads, head_dim or not
    "llama-heads-do-not-divide-hidden": {"model_type": "llama", **_S, "num_attention_heads": 7,
                                         "num_key_value_heads": 7, "head_dim": 32},
}  # fmt: skip


def _transformers_refuses(cfg: dict[str, Any]) -> bool:
    try:
        meta_model(_tf_config(cfg))
    except Exception:
        return True
    return False


@pytest.mark.parametrize("name", REFUSED)
def test_configs_transformers_refuses_are_refused_on_the_analytic_path(name):
    assert _transformers_refuses(REFUSED[name])
    with pytest.raises(UsageError):
        from_config(REFUSED[name])


def test_accepted_variants_near_the_refusals():
    # what transformers does accept next to those refusals: Phi-3 "su" with the key inside, a null num_kv_heads
    # (Falcon: one per query head), bool longrope factors (Phi3Config counts a bool as a number)
    ok = [
        {**_PHI3, "rope_scaling": {"type": "su", "short_factor": [1.0] * 16, "long_factor": [1.0] * 16,
                                   "original_max_position_embeddings": 4096}},
        {"model_type": "falcon", **_S, "new_decoder_architecture": True, "num_kv_heads": None},
        {"model_type": "mixtral", **_S, "num_local_experts": 2, "head_dim": 32,
         "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024}},
    ]  # fmt: skip
    for cfg in ok:
        assert not _transformers_refuses(cfg)
        model = meta_model(_tf_config(cfg))
        assert from_config(cfg).params == sum(p.numel() for p in model.parameters())


def test_rope_table_is_transformers():
    from transformers import PreTrainedConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from qcli.model.architectures import ROPE_REQUIRED

    assert set(ROPE_REQUIRED) == set(ROPE_INIT_FUNCTIONS) | {"default"}
    for kind, keys in ROPE_REQUIRED.items():  # each key qcli requires is one transformers' validator requires
        validate = getattr(PreTrainedConfig, f"_validate_{kind}_rope_parameters")
        config = _tf_config({"model_type": "llama", **_S})
        full = {"rope_type": kind, "rope_theta": 1e4, "factor": 2.0, "original_max_position_embeddings": 64,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0, "short_factor": [1.0] * 16,
                "long_factor": [1.0] * 16}  # fmt: skip
        validate(config, dict(full))
        for key in keys:
            with pytest.raises(KeyError):
                validate(config, {k: v for k, v in full.items() if k != key})


def test_strict_fields_table_is_the_config_classes():
    import dataclasses

    from transformers import AutoConfig

    from qcli.model.architectures import BUILDERS
    from qcli.model.config_fields import strict_fields

    base = {f.name for f in dataclasses.fields(type(AutoConfig.for_model("llama")).__mro__[1])}
    kinds = {"bool": "bool", "int": "number", "float": "number", "str": "str"}
    for mt in BUILDERS:
        fields = dataclasses.fields(type(AutoConfig.for_model(mt)))
        want = {
            f.name: kinds[getattr(f.type, "__name__", f.type)]
            for f in fields
            if f.name not in base and not f.name.startswith("_") and getattr(f.type, "__name__", f.type) in kinds
        }
        assert strict_fields(mt) == want, mt
