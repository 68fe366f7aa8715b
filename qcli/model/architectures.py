"""Analytic tensor lists for common architectures, from config.json alone (no torch).

Names and shapes follow transformers 5.x modules, so `llm_int8_skip_modules` patterns match as
they do at load time. tests/test_architectures.py checks every builder against a meta-device
build of the real transformers class, group by group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qcli.errors import UsageError
from qcli.model.config_schema import shown
from qcli.model.installed import transformers_at_least
from qcli.model.spec import AttentionShape, CacheLayer, ModelSpec, Role, TensorSpec, cfg_int

Cfg = dict[str, Any]


class _Builder:
    """Collects tensors in module order."""

    def __init__(self) -> None:
        self.tensors: list[TensorSpec] = []

    def add(self, name: str, shape: tuple[int, ...], role: Role, **kw: Any) -> None:
        self.tensors.append(TensorSpec(name, shape, role, **kw))

    def linear(self, name: str, out_f: int, in_f: int, bias: bool = False) -> None:
        self.add(f"{name}.weight", (out_f, in_f), "linear")
        if bias:
            self.add(f"{name}.bias", (out_f,), "bias")

    def conv1d(self, name: str, in_f: int, out_f: int) -> None:
        # GPT-2's Conv1D stores the weight transposed (in, out); bitsandbytes transposes it back.
        self.add(f"{name}.weight", (in_f, out_f), "linear", out_features=out_f)
        self.add(f"{name}.bias", (out_f,), "bias")

    def norm(self, name: str, size: int, bias: bool = False) -> None:
        self.add(f"{name}.weight", (size,), "norm")
        if bias:
            self.add(f"{name}.bias", (size,), "bias")


def config_dtype(cfg: Cfg) -> str | None:
    """Return the checkpoint's dtype from config.json (`dtype`, or transformers 4's `torch_dtype`)."""
    value = cfg.get("dtype") or cfg.get("torch_dtype")
    return value.removeprefix("torch.") if isinstance(value, str) else None


# transformers 5's config-class defaults for the keys the builders read, where config.json leaves them out (an
# absent key is the class default, which is not always "one KV head per query head" or hidden // heads: Mistral's
# num_key_value_heads is 8, Qwen3's head_dim 128, Gemma's 256). Defaults that derive from other keys (None in the
# class: Llama's num_key_value_heads, Falcon's ffn_hidden_size) are the builders' own. The basic sizes (hidden size,
# layer and head counts, vocabulary and intermediate sizes) stay required: a config.json without them is refused,
# not read as the class's 7B default. tests/test_architectures.py checks the table against the config classes.
CONFIG_DEFAULTS: dict[str, Cfg] = {
    "llama": {"max_position_embeddings": 2048, "tie_word_embeddings": False, "attention_bias": False,
             "mlp_bias": False},
    "mistral": {"num_key_value_heads": 8, "max_position_embeddings": 131072, "tie_word_embeddings": False},
    "mixtral": {"num_key_value_heads": 8, "max_position_embeddings": 131072, "tie_word_embeddings": False,
               "num_local_experts": 8},
    "qwen2": {"num_key_value_heads": 32, "max_position_embeddings": 32768, "tie_word_embeddings": False,
             "use_sliding_window": False, "max_window_layers": 28},
    "qwen2_moe": {"num_key_value_heads": 16, "max_position_embeddings": 32768, "tie_word_embeddings": False,
                 "qkv_bias": True, "use_sliding_window": False, "max_window_layers": 28, "num_experts": 60,
                 "decoder_sparse_step": 1},
    "qwen3": {"num_key_value_heads": 32, "head_dim": 128, "max_position_embeddings": 32768,
             "tie_word_embeddings": False, "attention_bias": False, "use_sliding_window": False,
             "max_window_layers": 28},
    "qwen3_moe": {"num_key_value_heads": 4, "max_position_embeddings": 32768, "tie_word_embeddings": False,
                 "attention_bias": False, "use_sliding_window": False, "num_experts": 128,
                 "decoder_sparse_step": 1},
    "gemma": {"num_key_value_heads": 16, "head_dim": 256, "max_position_embeddings": 8192,
             "tie_word_embeddings": True, "attention_bias": False},
    "gemma2": {"num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 8192,
              "tie_word_embeddings": True, "attention_bias": False},
    "gemma3_text": {"num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 131072,
                   "tie_word_embeddings": True, "attention_bias": False},
    "phi": {"max_position_embeddings": 2048, "tie_word_embeddings": False, "qk_layernorm": False},
    "phi3": {"max_position_embeddings": 4096, "tie_word_embeddings": False},
    "gpt2": {"tie_word_embeddings": True, "n_positions": 1024},
    "gpt_neox": {"max_position_embeddings": 2048, "tie_word_embeddings": False, "attention_bias": True},
    "opt": {"max_position_embeddings": 2048, "tie_word_embeddings": True, "enable_bias": True,
           "do_layer_norm_before": True},
    "falcon": {"max_position_embeddings": 2048, "tie_word_embeddings": True, "new_decoder_architecture": False,
              "multi_query": True, "parallel_attn": True, "bias": False, "alibi": False},
    "gpt_oss": {"num_key_value_heads": 8, "head_dim": 64, "max_position_embeddings": 131072,
               "tie_word_embeddings": False, "attention_bias": True, "num_local_experts": 128},
    "deepseek_v3": {"num_key_value_heads": 128, "max_position_embeddings": 4096, "tie_word_embeddings": False,
                   "attention_bias": False, "moe_intermediate_size": 2048, "q_lora_rank": 1536,
                   "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
                   "n_routed_experts": 256, "n_shared_experts": 1, "first_k_dense_replace": 3},
}  # fmt: skip
# Keys a config class stores under another name (its `attribute_map`, Falcon's `n_embed`): config.json key -> the
# name the builders read. transformers 5 sets such a key after the class's own fields, so when both are given the
# alias wins (gpt2's hidden_size over n_embd, gpt-oss's num_experts over num_local_experts), as Falcon's n_embed does.
CONFIG_ALIASES: dict[str, dict[str, str]] = {
    "gpt2": {"hidden_size": "n_embd", "max_position_embeddings": "n_positions", "num_attention_heads": "n_head",
             "num_hidden_layers": "n_layer"},
    "mixtral": {"num_experts": "num_local_experts"},
    "qwen3_moe": {"num_local_experts": "num_experts"},
    "gpt_oss": {"num_experts": "num_local_experts"},
    "deepseek_v3": {"num_local_experts": "n_routed_experts"},
}  # fmt: skip


def with_defaults(cfg: Cfg) -> Cfg:
    """Return the config as its transformers config class reads it: aliases renamed, absent keys defaulted."""
    mt = str(cfg.get("model_type"))
    out = dict(cfg)
    for alias, name in CONFIG_ALIASES.get(mt, {}).items():
        if alias in out:  # set after the config class's own fields: the alias wins when both are given
            out[name] = out.pop(alias)
    if mt == "falcon" and cfg.get("n_embed") is not None:
        out["hidden_size"] = cfg["n_embed"]
    return {**CONFIG_DEFAULTS.get(mt, {}), **out}


def _kv_heads(cfg: Cfg, heads: int) -> int:
    """Return num_key_value_heads; null (or a config class with no default) means one per query head."""
    return cfg_int({"kv": cfg.get("num_key_value_heads") or heads}, "kv")


def _head_dim(cfg: Cfg) -> int:
    hidden, heads = cfg_int(cfg, "hidden_size"), cfg_int(cfg, "num_attention_heads")
    head_dim = cfg.get("head_dim")
    if head_dim is None:
        if hidden % heads:
            raise UsageError("config.json: hidden_size is not divisible by num_attention_heads")
        return hidden // heads
    return cfg_int(cfg, "head_dim")


def _layer_types(cfg: Cfg, layers: int) -> list[str]:
    """Return each layer's attention type as transformers 5's config classes derive it.

    Mirrors each config's `__post_init__` (qwen2/qwen3: sliding from `max_window_layers` on when
    `use_sliding_window`; qwen2_moe: every other layer below it; gemma2/3 patterns) and, for configs with
    no `layer_types`, transformers' `get_layer_types_and_kwargs`: a `sliding_window` makes every layer
    sliding.
    """
    layer_types = cfg.get("layer_types")
    if isinstance(layer_types, list) and len(layer_types) == layers:
        return [str(t) for t in layer_types]
    mt = cfg.get("model_type")
    if mt in {"gemma2", "gpt_oss"}:  # Gemma 2 and gpt-oss alternate: sliding, full, sliding, ...
        return ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)]
    if mt == "gemma3_text":  # Gemma 3: five sliding layers, then one full (sliding_window_pattern 6)
        pattern = cfg.get("sliding_window_pattern", 6)
        if not isinstance(pattern, int) or isinstance(pattern, bool) or pattern < 1:  # transformers divides by it
            raise UsageError(
                f"config.json: sliding_window_pattern must be a positive integer, got {shown(pattern)}; transformers "
                "cannot derive the layer types from it",
                "remove it (the default is 6) or write layer_types",
            )
        return ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(layers)]
    window = _window(cfg)
    if mt in {"qwen2", "qwen3"}:
        first = cfg_int(cfg, "max_window_layers", 28, minimum=0)
        return ["sliding_attention" if window and i >= first else "full_attention" for i in range(layers)]
    if mt == "qwen2_moe":
        last = cfg_int(cfg, "max_window_layers", 28, minimum=0)
        return ["sliding_attention" if window and (i + 1) % 2 and i < last else "full_attention" for i in range(layers)]
    return ["sliding_attention" if window else "full_attention"] * layers


# transformers 5 config defaults for `sliding_window` (absent: no window unless the config sets one).
_DEFAULT_WINDOW = {"mistral": 4096, "gemma2": 4096, "gemma3_text": 4096, "qwen2": 4096, "qwen3": 4096,
                   "qwen2_moe": 4096, "qwen3_moe": 4096, "gpt_oss": 128}  # fmt: skip
# Families whose config class drops `sliding_window` unless `use_sliding_window` is set.
_USE_SLIDING_WINDOW = frozenset({"qwen2", "qwen3", "qwen2_moe", "qwen3_moe"})


def _window(cfg: Cfg) -> int | None:
    """Return the config's sliding window as its config class resolves it, or None."""
    mt = cfg.get("model_type")
    if mt in _USE_SLIDING_WINDOW and not cfg.get("use_sliding_window", False):
        return None
    window = cfg.get("sliding_window", _DEFAULT_WINDOW.get(str(mt)))
    return int(window) if isinstance(window, int) and not isinstance(window, bool) and window > 0 else None


def _windows(cfg: Cfg, layers: int) -> list[int | None]:
    """Return the attention window of each layer (None = full attention)."""
    window = _window(cfg)
    return [window if t == "sliding_attention" else None for t in _layer_types(cfg, layers)]


# gpt2 and falcon spell the common keys differently: attention_shape reads the first one present.
KEY_ALIASES = {
    "num_hidden_layers": ("num_hidden_layers", "n_layer"),
    "hidden_size": ("hidden_size", "n_embd"),
    "num_attention_heads": ("num_attention_heads", "n_head"),
}


def attention_shape(cfg: Cfg) -> AttentionShape:
    """Return the KV-cache shape of a decoder config (GQA/MQA aware)."""
    norm = dict(cfg)
    for key, aliases in KEY_ALIASES.items():
        for alias in aliases:
            if alias in cfg:
                norm[key] = cfg[alias]
                break
    layers = cfg_int(norm, "num_hidden_layers")
    heads = cfg_int(norm, "num_attention_heads")
    kv = norm.get("num_key_value_heads") or norm.get("num_kv_heads")
    falcon = cfg.get("model_type") == "falcon"
    if falcon and cfg.get("new_decoder_architecture"):
        # FalconAttention caches K/V expanded to every query head under the new decoder architecture
        # (modeling_falcon: `num_kv_heads = self.num_heads if self.new_decoder_architecture`).
        kv = heads
    elif cfg.get("multi_query", falcon):  # Falcon's multi_query defaults to True
        kv = 1
    kv_heads = cfg_int({"kv": kv or heads}, "kv")
    return AttentionShape(
        layers=layers,
        kv_heads=kv_heads,
        head_dim=_head_dim(norm),
        hidden_size=cfg_int(norm, "hidden_size"),
        heads=heads,
        windows=_windows(norm, layers),
    )


def _fraction(cfg: Cfg, keys: tuple[str, ...], default: float) -> float:
    """Return the rotary fraction as transformers 5's config classes resolve it: the `partial_rotary_factor` of
    `rope_scaling` (which replaces `rope_parameters` when set) or `rope_parameters`, then the first of `keys` the
    config sets (null counts as unset), else the family's default."""
    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters")
    if isinstance(rope, dict):
        value = rope.get("partial_rotary_factor")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1:
            return float(value)
    return next((float(cfg[k]) for k in keys if cfg.get(k) is not None), default)


def _rotary_dim(cfg: Cfg, head_dim: int, default_type: str = "default") -> int:
    """Return the rotary dimensions of a family whose own default RoPE ignores `partial_rotary_factor` (Llama-like,
    gpt-oss): the full head for the default type; other types (linear, yarn, llama3, ...) go through transformers'
    ROPE_INIT_FUNCTIONS, which do apply it. `default_type`: the config class's type when config.json sets none."""
    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters")
    kind = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else default_type
    return head_dim if kind == "default" else int(head_dim * _fraction(cfg, ("partial_rotary_factor",), 1.0))


# The RoPE types transformers 5 builds (`ROPE_INIT_FUNCTIONS`, and "default") and the keys each type's validator
# requires besides `rope_type` (`_validate_<type>_rope_parameters`; `original_max_position_embeddings` and `rope_theta`
# are filled in by `standardize_rope_params`). tests/test_real_configs.py checks the table against transformers.
ROPE_REQUIRED: dict[str, tuple[str, ...]] = {
    "default": (), "linear": ("factor",), "dynamic": ("factor",), "yarn": ("factor",),
    "longrope": ("short_factor", "long_factor"), "llama3": ("factor", "low_freq_factor", "high_freq_factor"),
    "proportional": (),
}  # fmt: skip


def _rope_dicts(cfg: Cfg) -> list[tuple[str, dict[str, Any]]]:
    """Return the RoPE parameter dicts as transformers reads them (`rope_scaling` replaces `rope_parameters`), one per
    layer type when the dict is nested by layer type, with the config.json key path of each."""
    key = "rope_scaling" if cfg.get("rope_scaling") else "rope_parameters"
    rope = cfg.get(key)
    if not isinstance(rope, dict) or not rope:
        return []
    if "rope_type" not in rope and "type" not in rope and all(isinstance(v, dict) or v is None for v in rope.values()):
        return [(f"{key}.{name}", v) for name, v in rope.items() if isinstance(v, dict)]
    return [(key, rope)]


def _check_rope(cfg: Cfg, inv_freq: int | None = None, head_dim_unset: bool = False) -> None:
    """Refuse the RoPE parameters transformers 5 refuses when it loads the config or builds the model.

    An unknown type (the model's rotary class has no init function for it), a key the type's validator requires,
    longrope factors that are not one per rotary frequency (`inv_freq` of them: the build fails to broadcast), and
    the types whose init reads `config.head_dim` without a fallback when the config class leaves it null (Mixtral).
    """
    phi3 = cfg.get("model_type") == "phi3"
    for key, rope in _rope_dicts(cfg):
        kind = rope.get("rope_type", rope.get("type", "default"))
        if phi3 and kind in ("su", "yarn"):  # Phi3Config reads both as longrope, after standardizing
            if kind == "su" and "original_max_position_embeddings" not in rope:
                raise UsageError(
                    f"config.json: {key}: transformers 5 reads Phi-3's RoPE type 'su' as longrope but does not "
                    "fill in its original_max_position_embeddings, and refuses the config",
                    f'write "rope_type": "longrope" (or add original_max_position_embeddings to {key})',
                )
            kind = "longrope"
        if not isinstance(kind, str) or kind not in ROPE_REQUIRED:
            raise UsageError(
                f"config.json: {key}: transformers has no RoPE type {shown(kind)} "
                f"(it knows {', '.join(sorted(ROPE_REQUIRED))})"
            )
        missing = [k for k in ROPE_REQUIRED[kind] if k not in rope]
        if missing:
            raise UsageError(
                f"config.json: {key}: RoPE type {kind!r} needs {', '.join(missing)}; transformers refuses the config "
                "without"
            )
        if head_dim_unset and kind in ("dynamic", "yarn", "longrope"):
            raise UsageError(
                f"config.json: {key}: transformers cannot build RoPE type {kind!r} for this config without head_dim "
                "(its rotary init reads a null head_dim)",
                "add head_dim (hidden_size / num_attention_heads) to config.json",
            )
        if kind == "longrope" and inv_freq is not None:
            for name in ("short_factor", "long_factor"):
                factor = rope[name]
                if isinstance(factor, list) and len(factor) not in (1, inv_freq):
                    raise UsageError(
                        f"config.json: {key}.{name} has {len(factor)} entries, the model has {inv_freq} rotary "
                        "frequencies: transformers cannot build it"
                    )


def _check_heads_divide_hidden(cfg: Cfg) -> None:
    """Refuse what `validate_architecture` refuses (Llama, Gemma 2/3, GPT-NeoX): a hidden size that is not a multiple
    of the head count, even when head_dim is given."""
    hidden, heads = cfg_int(cfg, "hidden_size"), cfg_int(cfg, "num_attention_heads")
    if cfg.get("model_type") in {"llama", "gemma2", "gemma3_text", "gpt_neox"} and hidden % heads:
        raise UsageError(
            f"config.json: hidden_size {hidden} is not a multiple of num_attention_heads {heads}; transformers' "
            f"{cfg.get('model_type')} config refuses it even with head_dim set"
        )


def _rope_buffers(b: _Builder, prefix: str, rotary_dim: int, count: int = 1, names: tuple[str, ...] = ("",)) -> None:
    # transformers keeps inv_freq and original_inv_freq as fp32 buffers of rotary_dim/2 each.
    for n in names:
        for buf in ("inv_freq", "original_inv_freq"):
            b.add(f"{prefix}{n}.{buf}", (rotary_dim // 2,), "buffer", dtype="float32")


def _default_skips(b: _Builder, tied: bool) -> tuple[str, ...]:
    """Return the modules transformers' bnb quantizer keeps unquantized for a *ForCausalLM builder's list.

    Mirrors `get_keys_to_not_convert` on the model before tying: the output head `lm_head`; the module of
    the last parameter, which before tying is always lm_head's (`lm_head.bias` when it has one: only a
    trailing `.weight` is stripped, so that entry skips nothing more); both ends of the tie.
    """
    has_bias = any(t.name == "lm_head.bias" for t in b.tensors)
    skips = {"lm_head", "lm_head.bias" if has_bias else "lm_head"}
    if tied:
        skips.add(next(t.module for t in b.tensors if t.role == "embedding"))
    return tuple(sorted(skips))


def _spec(cfg: Cfg, b: _Builder, tied: bool, attn: AttentionShape | None = None, **kw: Any) -> ModelSpec:
    return ModelSpec(
        model_type=cfg["model_type"],
        tensors=b.tensors,
        attention=attn or attention_shape(cfg),
        vocab_size=cfg_int(cfg, "vocab_size"),
        tied_embeddings=tied,
        max_position_embeddings=cfg.get("max_position_embeddings") or cfg.get("n_positions"),
        model_class=CAUSAL_LM_CLASS[cfg["model_type"]],
        default_skips=_default_skips(b, tied),
        **kw,
    )


def _experts(cfg: Cfg) -> int:
    """Return the expert count: transformers 5 saves Qwen-MoE's `num_experts` as `num_local_experts`."""
    return int(cfg.get("num_experts") or cfg.get("num_local_experts") or 0)


def _moe_layer(cfg: Cfg, i: int) -> bool:
    experts = _experts(cfg)
    if not experts or i in (cfg.get("mlp_only_layers") or []):
        return False
    return (i + 1) % (cfg.get("decoder_sparse_step") or 1) == 0


def llama_like(cfg: Cfg) -> ModelSpec:
    """Return llama, mistral, mixtral, qwen2(_moe), qwen3(_moe) and gemma(2/3) tensor lists."""
    mt = cfg["model_type"]
    h, vocab = cfg_int(cfg, "hidden_size"), cfg_int(cfg, "vocab_size")
    layers, heads = cfg_int(cfg, "num_hidden_layers"), cfg_int(cfg, "num_attention_heads")
    kv = _kv_heads(cfg, heads)
    hd = _head_dim(cfg)
    _check_heads_divide_hidden(cfg)
    gemma = mt.startswith("gemma")
    tied = bool(cfg.get("tie_word_embeddings", gemma))
    # Which biases each family's modeling file reads: Qwen2 always biases q/k/v (Qwen2-MoE per `qkv_bias`) and never
    # o_proj; Mistral and Mixtral have none; the others follow `attention_bias`; only Llama reads `mlp_bias`.
    if mt == "qwen2":
        qkv_bias, o_bias = True, False
    elif mt == "qwen2_moe":
        qkv_bias, o_bias = bool(cfg.get("qkv_bias", True)), False
    elif mt in {"mistral", "mixtral"}:
        qkv_bias = o_bias = False
    else:
        qkv_bias = o_bias = bool(cfg.get("attention_bias", False))
    mlp_bias = mt == "llama" and bool(cfg.get("mlp_bias", False))
    qk_norm = mt in {"qwen3", "qwen3_moe", "gemma3_text"}
    b = _Builder()
    b.add("model.embed_tokens.weight", (vocab, h), "embedding")
    for i in range(layers):
        p = f"model.layers.{i}"
        b.linear(f"{p}.self_attn.q_proj", heads * hd, h, qkv_bias)
        b.linear(f"{p}.self_attn.k_proj", kv * hd, h, qkv_bias)
        b.linear(f"{p}.self_attn.v_proj", kv * hd, h, qkv_bias)
        b.linear(f"{p}.self_attn.o_proj", h, heads * hd, o_bias)
        if qk_norm:
            b.norm(f"{p}.self_attn.q_norm", hd)
            b.norm(f"{p}.self_attn.k_norm", hd)
        if mt == "mixtral":
            e, inter = _experts(cfg), cfg_int(cfg, "intermediate_size")
            b.add(f"{p}.mlp.gate.weight", (e, h), "router")
            b.add(f"{p}.mlp.experts.gate_up_proj", (e, 2 * inter, h), "experts")
            b.add(f"{p}.mlp.experts.down_proj", (e, h, inter), "experts")
        elif mt in {"qwen2_moe", "qwen3_moe"} and _moe_layer(cfg, i):
            e, inter = _experts(cfg), cfg_int(cfg, "moe_intermediate_size")
            b.add(f"{p}.mlp.gate.weight", (e, h), "router")
            b.add(f"{p}.mlp.experts.gate_up_proj", (e, 2 * inter, h), "experts")
            b.add(f"{p}.mlp.experts.down_proj", (e, h, inter), "experts")
            if mt == "qwen2_moe":
                shared = cfg_int(cfg, "shared_expert_intermediate_size")
                b.linear(f"{p}.mlp.shared_expert.gate_proj", shared, h)
                b.linear(f"{p}.mlp.shared_expert.up_proj", shared, h)
                b.linear(f"{p}.mlp.shared_expert.down_proj", h, shared)
                b.linear(f"{p}.mlp.shared_expert_gate", 1, h)
        else:
            inter = cfg_int(cfg, "intermediate_size")
            b.linear(f"{p}.mlp.gate_proj", inter, h, mlp_bias)
            b.linear(f"{p}.mlp.up_proj", inter, h, mlp_bias)
            b.linear(f"{p}.mlp.down_proj", h, inter, mlp_bias)
        b.norm(f"{p}.input_layernorm", h)
        b.norm(f"{p}.post_attention_layernorm", h)
        if mt in {"gemma2", "gemma3_text"}:
            b.norm(f"{p}.pre_feedforward_layernorm", h)
            b.norm(f"{p}.post_feedforward_layernorm", h)
    b.norm("model.norm", h)
    if not tied:
        b.add("lm_head.weight", (vocab, h), "lm_head")
    if gemma:  # Gemma scales embeddings by sqrt(hidden): a 0-d buffer
        b.add("model.embed_tokens.embed_scale", (), "buffer")  # built in the load dtype, not float32
    rotary = hd if mt == "gemma3_text" else _rotary_dim(cfg, hd)
    _check_rope(cfg, rotary // 2, head_dim_unset=mt == "mixtral" and cfg.get("head_dim") is None)
    if mt == "gemma3_text":  # one rotary table per attention type present
        types = [t for t in ("sliding_attention", "full_attention") if t in _layer_types(cfg, layers)]
        for t in types:
            for buf in ("inv_freq", "original_inv_freq"):
                b.add(f"model.rotary_emb.{t}_{buf}", (hd // 2,), "buffer", dtype="float32")
    else:
        _rope_buffers(b, "model.rotary_emb", rotary)
    return _spec(cfg, b, tied)


def phi3(cfg: Cfg) -> ModelSpec:
    """Return the Phi-3 tensor list (fused qkv_proj and gate_up_proj)."""
    h, vocab = cfg_int(cfg, "hidden_size"), cfg_int(cfg, "vocab_size")
    layers, heads = cfg_int(cfg, "num_hidden_layers"), cfg_int(cfg, "num_attention_heads")
    kv, hd, inter = _kv_heads(cfg, heads), _head_dim(cfg), cfg_int(cfg, "intermediate_size")
    tied = bool(cfg.get("tie_word_embeddings", False))
    b = _Builder()
    b.add("model.embed_tokens.weight", (vocab, h), "embedding")
    for i in range(layers):
        p = f"model.layers.{i}"
        b.linear(f"{p}.self_attn.o_proj", h, heads * hd)
        b.linear(f"{p}.self_attn.qkv_proj", (heads + 2 * kv) * hd, h)
        b.linear(f"{p}.mlp.gate_up_proj", 2 * inter, h)
        b.linear(f"{p}.mlp.down_proj", h, inter)
        b.norm(f"{p}.input_layernorm", h)
        b.norm(f"{p}.post_attention_layernorm", h)
    b.norm("model.norm", h)
    if not tied:
        b.add("lm_head.weight", (vocab, h), "lm_head")
    fraction = _fraction(cfg, ("partial_rotary_factor",), 1.0)
    _check_phi3_rope(cfg, int(h // heads * fraction) // 2)
    _check_rope(cfg, int(hd * fraction) // 2)
    _rope_buffers(b, "model.rotary_emb", int(hd * fraction))
    return _spec(cfg, b, tied)


def _check_phi3_rope(cfg: Cfg, half: int) -> None:
    """Refuse what Phi3Config.validate_rope refuses: a RoPE type other than default/longrope ("su" and "yarn" are
    read as longrope), or short/long factors that are not `half` numbers (half the rotary dimensions)."""
    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters")
    if not isinstance(rope, dict):
        return
    key = "rope_scaling" if cfg.get("rope_scaling") else "rope_parameters"
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in ("default", "longrope", "su", "yarn"):
        raise UsageError(f"config.json: {key}: Phi-3 takes the RoPE types default and longrope, got {shown(kind)}")
    for name in ("short_factor", "long_factor"):
        factor = rope.get(name)
        if factor is not None and not (
            isinstance(factor, list)
            and len(factor) == half
            and all(isinstance(x, (int, float)) for x in factor)  # as Phi3Config checks (a bool is an int)
        ):
            got = f"{len(factor)} entries" if isinstance(factor, list) else shown(factor)
            raise UsageError(
                f"config.json: {key}.{name} must be a list of {half} numbers (half the rotary dimensions), got {got}"
            )


def phi(cfg: Cfg) -> ModelSpec:
    """Return the Phi-1/1.5/2 tensor list (LayerNorm with bias, biased linears, lm_head bias)."""
    h, vocab = cfg_int(cfg, "hidden_size"), cfg_int(cfg, "vocab_size")
    layers, heads = cfg_int(cfg, "num_hidden_layers"), cfg_int(cfg, "num_attention_heads")
    kv, hd, inter = _kv_heads(cfg, heads), _head_dim(cfg), cfg_int(cfg, "intermediate_size")
    tied = bool(cfg.get("tie_word_embeddings", False))
    b = _Builder()
    b.add("model.embed_tokens.weight", (vocab, h), "embedding")
    for i in range(layers):
        p = f"model.layers.{i}"
        b.linear(f"{p}.self_attn.q_proj", heads * hd, h, True)
        b.linear(f"{p}.self_attn.k_proj", kv * hd, h, True)
        b.linear(f"{p}.self_attn.v_proj", kv * hd, h, True)
        b.linear(f"{p}.self_attn.dense", h, heads * hd, True)
        if cfg.get("qk_layernorm"):
            b.norm(f"{p}.self_attn.q_layernorm", hd, bias=True)
            b.norm(f"{p}.self_attn.k_layernorm", hd, bias=True)
        b.linear(f"{p}.mlp.fc1", inter, h, True)
        b.linear(f"{p}.mlp.fc2", h, inter, True)
        b.norm(f"{p}.input_layernorm", h, bias=True)
    b.norm("model.final_layernorm", h, bias=True)
    if not tied:
        b.add("lm_head.weight", (vocab, h), "lm_head")
    b.add("lm_head.bias", (vocab,), "bias")
    rotary = int(hd * _fraction(cfg, ("partial_rotary_factor",), 0.5))
    _check_rope(cfg, rotary // 2)
    _rope_buffers(b, "model.rotary_emb", rotary)
    return _spec(cfg, b, tied)


def gpt2(cfg: Cfg) -> ModelSpec:
    """Return the GPT-2 tensor list (Conv1D linears, learned positions, tied lm_head)."""
    h, vocab = cfg_int(cfg, "n_embd"), cfg_int(cfg, "vocab_size")
    layers, positions = cfg_int(cfg, "n_layer"), cfg_int(cfg, "n_positions")
    inter = cfg.get("n_inner") or 4 * h
    tied = bool(cfg.get("tie_word_embeddings", True))
    b = _Builder()
    b.add("transformer.wte.weight", (vocab, h), "embedding")
    b.add("transformer.wpe.weight", (positions, h), "embedding")
    for i in range(layers):
        p = f"transformer.h.{i}"
        b.norm(f"{p}.ln_1", h, bias=True)
        b.conv1d(f"{p}.attn.c_attn", h, 3 * h)
        b.conv1d(f"{p}.attn.c_proj", h, h)
        b.norm(f"{p}.ln_2", h, bias=True)
        if cfg.get("add_cross_attention"):  # GPT2Block: cross-attention to an encoder's states, with its own norm
            b.conv1d(f"{p}.crossattention.c_attn", h, 2 * h)
            b.conv1d(f"{p}.crossattention.q_attn", h, h)
            b.conv1d(f"{p}.crossattention.c_proj", h, h)
            b.norm(f"{p}.ln_cross_attn", h, bias=True)
        b.conv1d(f"{p}.mlp.c_fc", h, inter)
        b.conv1d(f"{p}.mlp.c_proj", inter, h)
    b.norm("transformer.ln_f", h, bias=True)
    if not tied:
        b.add("lm_head.weight", (vocab, h), "lm_head")
    return _spec(cfg, b, tied)


def gpt_neox(cfg: Cfg) -> ModelSpec:
    """Return the GPT-NeoX / Pythia tensor list (fused query_key_value, untied embed_out)."""
    h, vocab = cfg_int(cfg, "hidden_size"), cfg_int(cfg, "vocab_size")
    layers, inter = cfg_int(cfg, "num_hidden_layers"), cfg_int(cfg, "intermediate_size")
    bias = bool(cfg.get("attention_bias", True))
    tied = bool(cfg.get("tie_word_embeddings", False))
    b = _Builder()
    b.add("gpt_neox.embed_in.weight", (vocab, h), "embedding")
    for i in range(layers):
        p = f"gpt_neox.layers.{i}"
        b.norm(f"{p}.input_layernorm", h, bias=True)
        b.norm(f"{p}.post_attention_layernorm", h, bias=True)
        b.linear(f"{p}.attention.query_key_value", 3 * h, h, bias)
        b.linear(f"{p}.attention.dense", h, h, bias)
        b.linear(f"{p}.mlp.dense_h_to_4h", inter, h, True)
        b.linear(f"{p}.mlp.dense_4h_to_h", h, inter, True)
    b.norm("gpt_neox.final_layer_norm", h, bias=True)
    if not tied:
        b.add("lm_head.weight", (vocab, h), "lm_head")
    hd = _head_dim(cfg)
    _check_heads_divide_hidden(cfg)
    rotary = int(hd * _fraction(cfg, ("rotary_pct",), 0.25))
    _check_rope(cfg, rotary // 2)
    _rope_buffers(b, "gpt_neox.rotary_emb", rotary)
    return _spec(cfg, b, tied)


def opt(cfg: Cfg) -> ModelSpec:
    """Return the OPT tensor list (learned positions with offset 2, optional projections)."""
    h, vocab = cfg_int(cfg, "hidden_size"), cfg_int(cfg, "vocab_size")
    layers, ffn = cfg_int(cfg, "num_hidden_layers"), cfg_int(cfg, "ffn_dim")
    proj = cfg.get("word_embed_proj_dim") or h
    bias = bool(cfg.get("enable_bias", True))
    tied = bool(cfg.get("tie_word_embeddings", True))
    b = _Builder()
    p0 = "model.decoder"
    b.add(f"{p0}.embed_tokens.weight", (vocab, proj), "embedding")
    b.add(f"{p0}.embed_positions.weight", (cfg_int(cfg, "max_position_embeddings") + 2, h), "embedding")
    if proj != h:
        b.linear(f"{p0}.project_out", proj, h)
        b.linear(f"{p0}.project_in", h, proj)
    # nn.LayerNorm(elementwise_affine=False) has neither weight nor bias.
    affine = bool(cfg.get("layer_norm_elementwise_affine", True))
    if cfg.get("do_layer_norm_before", True) and not cfg.get("_remove_final_layer_norm", False) and affine:
        b.norm(f"{p0}.final_layer_norm", h, bias=True)
    for i in range(layers):
        p = f"{p0}.layers.{i}"
        for n in ("k_proj", "v_proj", "q_proj", "out_proj"):
            b.linear(f"{p}.self_attn.{n}", h, h, bias)
        if affine:
            b.norm(f"{p}.self_attn_layer_norm", h, bias=True)
        b.linear(f"{p}.fc1", ffn, h, bias)
        b.linear(f"{p}.fc2", h, ffn, bias)
        if affine:
            b.norm(f"{p}.final_layer_norm", h, bias=True)
    if not tied:
        b.add("lm_head.weight", (vocab, proj), "lm_head")
    return _spec(cfg, b, tied)


def falcon(cfg: Cfg) -> ModelSpec:
    """Return the Falcon tensor list (fused query_key_value; MQA or grouped KV)."""
    # FalconConfig derives these (read-only properties): transformers cannot load a config that sets them.
    for key, rule in (("head_dim", "hidden_size / num_attention_heads"), ("rotary", "not alibi")):
        if key in cfg:
            raise UsageError(
                f"config.json: Falcon derives {key!r} ({rule}); transformers cannot load a config that sets it",
                f"remove {key!r} from config.json",
            )
    # The old RefinedWeb names n_layer / n_head are no FalconConfig fields: transformers ignores them and builds the
    # class defaults (32 layers, 71 heads). Counted as it builds the model, and said so.
    notes: list[str] = []
    for name, old, default in (("num_hidden_layers", "n_layer", 32), ("num_attention_heads", "n_head", 71)):
        if name not in cfg and old in cfg:
            cfg = {**cfg, name: default}
            differs = "" if cfg[old] == default else f", not {shown(cfg[old])}"
            notes.append(
                f"config.json names {old} (the old RefinedWeb name), which transformers' FalconConfig ignores: it "
                f"builds its default {name} {default}{differs}; write {name} for the model the checkpoint holds"
            )
    h, vocab = cfg_int(cfg, "hidden_size"), cfg_int(cfg, "vocab_size")
    layers, heads = cfg_int(cfg, "num_hidden_layers"), cfg_int(cfg, "num_attention_heads")
    if h % heads:  # FalconAttention refuses it
        raise UsageError(
            f"config.json: hidden_size {h} is not divisible by num_attention_heads {heads}: transformers "
            "cannot build the Falcon attention" + (" (it ignores n_head)" if "n_head" in cfg else "")
        )
    hd = h // heads
    new_arch = bool(cfg.get("new_decoder_architecture"))
    if new_arch:
        kv = cfg_int(cfg, "num_kv_heads", heads) if cfg.get("num_kv_heads") is not None else heads
        qkv_out = (heads + 2 * kv) * hd
    elif cfg.get("multi_query", True):
        qkv_out = h + 2 * hd
    else:
        qkv_out = 3 * h
    bias = bool(cfg.get("bias", False))
    inter = cfg.get("ffn_hidden_size") or 4 * h
    tied = bool(cfg.get("tie_word_embeddings", True))
    b = _Builder()
    b.add("transformer.word_embeddings.weight", (vocab, h), "embedding")
    # FalconLinear subclasses nn.Linear, and transformers 5 converts only `type(m) is nn.Linear`:
    # measured with transformers 5.23 + bitsandbytes 0.50.2, Falcon loads with no layer quantized.
    role: Role = "linear_subclass"
    for i in range(layers):
        p = f"transformer.h.{i}"
        for name, out_f, in_f in (
            ("self_attention.query_key_value", qkv_out, h),
            ("self_attention.dense", h, h),
            ("mlp.dense_h_to_4h", inter, h),
            ("mlp.dense_4h_to_h", h, inter),
        ):
            b.add(f"{p}.{name}.weight", (out_f, in_f), role)
            if bias:
                b.add(f"{p}.{name}.bias", (out_f,), "bias")
        # FalconDecoderLayer: a null num_ln_in_parallel_attn means 2 under the new decoder architecture.
        num_ln = cfg.get("num_ln_in_parallel_attn") or (2 if new_arch else None)
        if not cfg.get("parallel_attn", True):
            b.norm(f"{p}.post_attention_layernorm", h, bias=True)
            b.norm(f"{p}.input_layernorm", h, bias=True)
        elif num_ln == 2:
            b.norm(f"{p}.ln_attn", h, bias=True)
            b.norm(f"{p}.ln_mlp", h, bias=True)
        else:
            b.norm(f"{p}.input_layernorm", h, bias=True)
    b.norm("transformer.ln_f", h, bias=True)
    if not tied:
        b.add("lm_head.weight", (vocab, h), "lm_head")
    # FalconModel builds its rotary embedding whatever `alibi` says (an ALiBi model just never calls it).
    _check_rope(cfg, hd // 2)
    _rope_buffers(b, "transformer.rotary_emb", hd)
    spec = _spec(cfg, b, tied)
    spec.notes.extend(notes)
    return spec


def gpt_oss(cfg: Cfg) -> ModelSpec:
    """Return the gpt-oss tensor list (attention sinks, biased router, fused experts with biases)."""
    h, vocab = cfg_int(cfg, "hidden_size"), cfg_int(cfg, "vocab_size")
    layers, heads = cfg_int(cfg, "num_hidden_layers"), cfg_int(cfg, "num_attention_heads")
    kv, hd = _kv_heads(cfg, heads), _head_dim(cfg)
    e, inter = cfg_int(cfg, "num_local_experts", 128), cfg_int(cfg, "intermediate_size")
    bias = bool(cfg.get("attention_bias", True))
    tied = bool(cfg.get("tie_word_embeddings", False))
    b = _Builder()
    b.add("model.embed_tokens.weight", (vocab, h), "embedding")
    for i in range(layers):
        p = f"model.layers.{i}"
        b.add(f"{p}.self_attn.sinks", (heads,), "other")  # one learned attention sink per head
        b.linear(f"{p}.self_attn.q_proj", heads * hd, h, bias)
        b.linear(f"{p}.self_attn.k_proj", kv * hd, h, bias)
        b.linear(f"{p}.self_attn.v_proj", kv * hd, h, bias)
        b.linear(f"{p}.self_attn.o_proj", h, heads * hd, bias)
        b.add(f"{p}.mlp.router.weight", (e, h), "router")
        b.add(f"{p}.mlp.router.bias", (e,), "bias")
        # GptOssExperts stores (experts, in, out) with a bias per expert: 3-D, so never quantized.
        b.add(f"{p}.mlp.experts.gate_up_proj", (e, h, 2 * inter), "experts")
        b.add(f"{p}.mlp.experts.gate_up_proj_bias", (e, 2 * inter), "other")
        b.add(f"{p}.mlp.experts.down_proj", (e, inter, h), "experts")
        b.add(f"{p}.mlp.experts.down_proj_bias", (e, h), "other")
        b.norm(f"{p}.input_layernorm", h)
        b.norm(f"{p}.post_attention_layernorm", h)
    b.norm("model.norm", h)
    if not tied:
        b.add("lm_head.weight", (vocab, h), "lm_head")
    rotary = _rotary_dim(cfg, hd, "yarn")  # GptOssConfig's default RoPE is yarn
    _check_rope(cfg, rotary // 2)
    _rope_buffers(b, "model.rotary_emb", rotary)
    # GptOssPreTrainedModel._keep_in_fp32_modules: transformers adds them to the bnb skip list.
    return _spec(cfg, b, tied, keep_in_fp32=("input_layernorm", "post_attention_layernorm", "norm"))


def deepseek_v3(cfg: Cfg) -> ModelSpec:
    """Return the DeepSeek-V3 tensor list (MLA attention, dense first layers, routed + shared experts)."""
    h, vocab = cfg_int(cfg, "hidden_size"), cfg_int(cfg, "vocab_size")
    layers, heads = cfg_int(cfg, "num_hidden_layers"), cfg_int(cfg, "num_attention_heads")
    # A null q_lora_rank is real (DeepSeek-V2-Lite): the query is projected without compression.
    q_rank = cfg_int(cfg, "q_lora_rank", 1536) if cfg.get("q_lora_rank", 1536) is not None else None
    kv_rank = cfg_int(cfg, "kv_lora_rank", 512)
    nope, rope = cfg_int(cfg, "qk_nope_head_dim", 128), cfg_int(cfg, "qk_rope_head_dim", 64)
    v_dim = cfg_int(cfg, "v_head_dim", 128)
    e, moe_inter = cfg_int(cfg, "n_routed_experts", 256), cfg_int(cfg, "moe_intermediate_size", 2048)
    shared, dense = cfg_int(cfg, "n_shared_experts", 1, minimum=0), cfg_int(cfg, "first_k_dense_replace", 3, minimum=0)
    inter, bias = cfg_int(cfg, "intermediate_size"), bool(cfg.get("attention_bias", False))
    tied = bool(cfg.get("tie_word_embeddings", False))
    b = _Builder()
    b.add("model.embed_tokens.weight", (vocab, h), "embedding")
    for i in range(layers):
        p = f"model.layers.{i}.self_attn"
        if q_rank is None:
            b.linear(f"{p}.q_proj", heads * (nope + rope), h)
        else:
            b.linear(f"{p}.q_a_proj", q_rank, h, bias)
            b.norm(f"{p}.q_a_layernorm", q_rank)
            b.linear(f"{p}.q_b_proj", heads * (nope + rope), q_rank)
        b.linear(f"{p}.kv_a_proj_with_mqa", kv_rank + rope, h, bias)
        b.norm(f"{p}.kv_a_layernorm", kv_rank)
        b.linear(f"{p}.kv_b_proj", heads * (nope + v_dim), kv_rank)
        b.linear(f"{p}.o_proj", h, heads * v_dim, bias)
        p = f"model.layers.{i}.mlp"
        if i >= dense:
            b.add(f"{p}.experts.gate_up_proj", (e, 2 * moe_inter, h), "experts")
            b.add(f"{p}.experts.down_proj", (e, h, moe_inter), "experts")
            b.add(f"{p}.gate.weight", (e, h), "router")
            for name, out_f, in_f in (("gate_proj", moe_inter * shared, h), ("up_proj", moe_inter * shared, h),
                                      ("down_proj", h, moe_inter * shared)):  # fmt: skip
                b.linear(f"{p}.shared_experts.{name}", out_f, in_f)
        else:
            b.linear(f"{p}.gate_proj", inter, h)
            b.linear(f"{p}.up_proj", inter, h)
            b.linear(f"{p}.down_proj", h, inter)
        b.norm(f"model.layers.{i}.input_layernorm", h)
        b.norm(f"model.layers.{i}.post_attention_layernorm", h)
    b.norm("model.norm", h)
    if not tied:
        b.add("lm_head.weight", (vocab, h), "lm_head")
    # The router's score correction, a buffer kept in float32 by _keep_in_fp32_modules_strict. transformers 5.24
    # also creates it as float32 and keeps the router weight (`gate.weight`) in float32 under 16-bit loads.
    fp32_router = transformers_at_least(5, 24)
    bias_dtype = "float32" if fp32_router else None
    for i in range(dense, layers):
        b.add(f"model.layers.{i}.mlp.gate.e_score_correction_bias", (e,), "buffer", dtype=bias_dtype)
    _check_rope(cfg, rope // 2)
    _rope_buffers(b, "model.rotary_emb", rope)
    strict = ("e_score_correction_bias", "gate.weight") if fp32_router else ("e_score_correction_bias",)
    spec = _spec(cfg, b, tied, keep_in_fp32_strict=strict)
    # MLA as transformers caches it: the compressed latent and the shared rope key, one vector per token.
    spec.cache = [CacheLayer("full", per_token=((kv_rank + rope, None),))] * layers
    return spec


def analytic_type(cfg: Cfg) -> str | None:
    """Return the model type transformers reads a config as, when an analytic builder describes it exactly; else None.

    transformers' AutoConfig reads a `mistral` config that has `layer_types` as `ministral` (and builds
    MinistralForCausalLM): that one goes through the meta path.
    """
    mt = cfg.get("model_type")
    if mt == "mistral" and "layer_types" in cfg:
        return None
    return mt if isinstance(mt, str) and mt in BUILDERS else None


BUILDERS: dict[str, Callable[[Cfg], ModelSpec]] = {
    **dict.fromkeys(
        ["llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text"],
        llama_like,
    ),
    "phi": phi,
    "phi3": phi3,
    "gpt2": gpt2,
    "gpt_neox": gpt_neox,
    "opt": opt,
    "falcon": falcon,
    "gpt_oss": gpt_oss,
    "deepseek_v3": deepseek_v3,
}
# The class `qcli load` builds for each analytic family (transformers' MODEL_FOR_CAUSAL_LM_MAPPING_NAMES;
# tests/test_sweep_sample.py checks the table against it).
CAUSAL_LM_CLASS: dict[str, str] = {
    "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "mixtral": "MixtralForCausalLM",
    "qwen2": "Qwen2ForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM", "qwen3": "Qwen3ForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM", "gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM", "phi": "PhiForCausalLM", "phi3": "Phi3ForCausalLM",
    "gpt2": "GPT2LMHeadModel", "gpt_neox": "GPTNeoXForCausalLM", "opt": "OPTForCausalLM",
    "falcon": "FalconForCausalLM", "gpt_oss": "GptOssForCausalLM", "deepseek_v3": "DeepseekV3ForCausalLM",
}  # fmt: skip
