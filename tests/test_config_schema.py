"""Every config.json key an analytic formula reads is checked by the schema (qcli/model/config_schema.py):
a wrong type, a negative and a huge value are each one UsageError naming the key (exit 2), never an internal
error and never a size with 300 digits. The keys are found in the formulas' source, so a new key read
without a schema entry fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qcli.errors import UsageError
from qcli.model import architectures
from qcli.model.architectures import BUILDERS, KEY_ALIASES
from qcli.model.config_schema import ConfigKeys, validate_config
from qcli.model.describe import from_config
from qcli.units import MAX_PARAMS

# cfg.get("k"), cfg_int(cfg, "k"), cfg["k"], and the same through attention_shape's `norm`.
_READ = re.compile(r'(?:(?:cfg|norm)\.get\(|cfg_int\((?:cfg|norm), |(?:cfg|norm)\[)"(\w+)"')
FORMULA_KEYS = sorted(
    set(_READ.findall(Path(architectures.__file__).read_text()))
    | {alias for aliases in KEY_ALIASES.values() for alias in aliases}
)
# Read leniently on purpose: config_dtype takes a string and otherwise falls back to the default load dtype; the RoPE
# dicts are read for a numeric partial_rotary_factor only (anything else: the family's default fraction).
LENIENT = {"dtype", "torch_dtype", "rope_parameters", "rope_scaling"}
SCHEMA_KEYS = {info.alias or name for name, info in ConfigKeys.model_fields.items()}

TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 256,
    "max_position_embeddings": 128,
}
EXTRA: dict[str, dict] = {
    "gpt2": {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 128},
    "opt": {"ffn_dim": 128, "num_key_value_heads": 4},
    "falcon": {"num_kv_heads": 4},
    "mixtral": {"num_local_experts": 4},
    "qwen2_moe": {"num_experts": 4, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 64},
    "qwen3_moe": {"num_experts": 4, "moe_intermediate_size": 32},
    "gpt_oss": {"num_local_experts": 4},
    "deepseek_v3": {
        "q_lora_rank": 32,
        "kv_lora_rank": 16,
        "qk_nope_head_dim": 8,
        "qk_rope_head_dim": 8,
        "v_head_dim": 8,
        "n_routed_experts": 4,
        "n_shared_experts": 1,
        "moe_intermediate_size": 32,
        "first_k_dense_replace": 1,
    },
}
BASES = {mt: {**TINY, "model_type": mt, **EXTRA.get(mt, {})} for mt in sorted(BUILDERS)}
HUGE = 10**300


def test_the_walk_finds_the_keys_the_probe_found():
    assert {"max_window_layers", "q_lora_rank", "kv_lora_rank", "first_k_dense_replace", "n_routed_experts",
            "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "n_head", "n_layer"} <= set(FORMULA_KEYS)  # fmt: skip


def test_every_key_the_formulas_read_is_in_the_schema():
    assert [k for k in FORMULA_KEYS if k not in SCHEMA_KEYS | LENIENT] == []


def test_every_base_builds():
    for base in BASES.values():
        assert from_config(base).params > 0


def _bad_values(key: str) -> list[object]:
    # model_type is a string: any string is a model type (an unknown one is refused elsewhere).
    return ([] if key == "model_type" else ["x"]) + [-1, HUGE]


@pytest.mark.parametrize("key", [k for k in FORMULA_KEYS if k not in LENIENT])
def test_a_bad_value_is_refused_naming_the_key(key):
    for value in _bad_values(key):
        with pytest.raises(UsageError, match=rf"config\.json: {key}: ") as err:
            validate_config({"model_type": "llama", key: value})
        assert len(err.value.message) < 300, err.value.message
        for base in BASES.values():  # and no formula reads the raw value first
            with pytest.raises(UsageError, match=key):
                from_config({**base, key: value})


@pytest.mark.parametrize("key", sorted(LENIENT))
def test_lenient_keys_fall_back(key):
    for value in ("x", -1, HUGE):
        assert from_config({**BASES["llama"], key: value}).config_dtype in (None, "x")


@pytest.mark.parametrize("model_type", sorted(BASES))
def test_edge_values_never_escape_as_internal_errors(model_type):
    """0, 1 and the largest accepted size of every key: a spec within MAX_PARAMS, or a UsageError."""
    for key in FORMULA_KEYS:
        for value in (0, 1, 2**31 - 1, None, True, 0.5):
            cfg = {**BASES[model_type], key: value}
            try:
                spec = from_config(cfg)
            except UsageError:
                continue
            assert spec.params <= MAX_PARAMS


@pytest.mark.parametrize(
    ("model_type", "override", "needle"),
    [
        ("qwen2", {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": "x"}, "max_window_layers"),
        ("qwen2_moe", {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": -1}, "max_window_layers"),
        ("deepseek_v3", {"q_lora_rank": -5}, "q_lora_rank"),
        ("deepseek_v3", {"q_lora_rank": 1.5}, "q_lora_rank"),
        ("deepseek_v3", {"first_k_dense_replace": "x"}, "first_k_dense_replace"),
        ("deepseek_v3", {"first_k_dense_replace": -3}, "first_k_dense_replace"),
        ("deepseek_v3", {"kv_lora_rank": HUGE}, "kv_lora_rank"),
        ("deepseek_v3", {"n_routed_experts": 10**12}, "n_routed_experts"),
    ],
)
def test_the_probe_findings(model_type, override, needle):
    with pytest.raises(UsageError, match=rf"config\.json: {needle}: "):
        from_config({**BASES[model_type], **override})


def test_a_null_q_lora_rank_is_a_plain_query_projection():
    spec = from_config({**BASES["deepseek_v3"], "q_lora_rank": None})
    names = {t.name for t in spec.tensors}
    assert "model.layers.0.self_attn.q_proj.weight" in names
    assert "model.layers.0.self_attn.q_a_proj.weight" not in names


def test_sizes_within_their_bounds_whose_product_is_absurd_are_refused():
    big = {"hidden_size": 2**31 - 1, "intermediate_size": 2**31 - 1, "vocab_size": 2**31 - 1}
    cfg = {**BASES["llama"], **big, "num_attention_heads": 1, "num_key_value_heads": 1}
    with pytest.raises(UsageError, match=r"describes 7\.38e\+19 parameters, more than qcli's limit of 1e\+15"):
        from_config(cfg)


@pytest.mark.parametrize("model_type", sorted(BASES))
def test_whole_number_floats_are_read_as_integers(model_type):
    """`64.0` counts as 64 in every integer key (some shipped configs write them); `64.5` is refused."""
    base = BASES[model_type]
    expected = from_config(base)
    for key, value in base.items():
        if not isinstance(value, int):
            continue
        spec = from_config({**base, key: float(value)})
        assert [(t.name, t.shape) for t in spec.tensors] == [(t.name, t.shape) for t in expected.tensors], key
        assert any(key in note and "whole-number floats" in note for note in spec.notes), spec.notes
        with pytest.raises(UsageError, match=rf"{key}: input should be a valid integer, got {value}\.5"):
            from_config({**base, key: value + 0.5})


def test_whole_number_floats_in_lists_and_text_config():
    checked = validate_config({"mlp_only_layers": [0.0, 2.0], "text_config": {"hidden_size": 64.0, "rope": 1.0}})
    assert checked == {"mlp_only_layers": [0, 2], "text_config": {"hidden_size": 64, "rope": 1.0}}
    assert type(checked["mlp_only_layers"][0]) is int
    raw = {"partial_rotary_factor": 1.0, "rope_theta": 10000.0}  # float keys stay floats
    assert validate_config(raw) == raw and type(validate_config(raw)["partial_rotary_factor"]) is float


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"num_key_value_heads": 64}, "num_key_value_heads 64 is more than num_attention_heads 4"),
        ({"num_key_value_heads": 3}, "num_key_value_heads 3 does not divide num_attention_heads 4"),
        ({"model_type": "falcon", "new_decoder_architecture": True, "num_kv_heads": 3}, "num_kv_heads 3 does not"),
        ({"text_config": {"num_attention_heads": 8, "num_key_value_heads": 16}}, "text_config: num_key_value_heads"),
    ],
)
def test_kv_heads_must_group_the_query_heads(override, needle):
    """transformers' repeat_kv serves heads // kv_heads query heads per key/value head."""
    with pytest.raises(UsageError, match=needle):
        from_config({**BASES["llama"], **override})


def test_kv_heads_that_group_the_heads_pass():
    for kv in (1, 2, 4):
        assert from_config({**BASES["llama"], "num_key_value_heads": kv}).attention.kv_heads == kv
    validate_config({"num_attention_heads": [4, 8], "num_key_value_heads": [2, 2]})  # per-layer lists: unchecked


@pytest.mark.parametrize(
    ("layer_types", "needle"),
    [
        (["full_attention"], "layer_types has 1 entries and num_hidden_layers is 2"),
        (["full_attention"] * 3, "layer_types has 3 entries and num_hidden_layers is 2"),
        (["full_attention", "bogus"], "layer_types: unknown layer type 'bogus'"),
        (["full_attention", "x" * 5000], r"layer_types: unknown layer type 'x{20,40}…"),
    ],
)
def test_layer_types_of_an_analytic_family_follow_transformers_rule(layer_types, needle):
    for model_type in ("llama", "qwen2", "gemma2", "mistral"):
        with pytest.raises(UsageError, match=needle) as err:
            from_config({**BASES[model_type], "layer_types": layer_types})
        assert len(err.value.message) < 300


def test_layer_types_transformers_accepts_pass():
    for types in (["sliding_attention", "full_attention"], ["attention", "full_attention"], ["linear_attention"] * 2):
        validate_config({**BASES["llama"], "layer_types": types})
    # other families' config classes have their own rules (resnet's stage types, nemotron_h's "mlp")
    validate_config({"model_type": "resnet", "num_hidden_layers": 2, "layer_types": ["basic", "bottleneck", "x"]})
