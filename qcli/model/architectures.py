"""Analytic tensor lists for common architectures, from config.json alone (no torch).

Names and shapes follow transformers 5.x modules, so `llm_int8_skip_modules` patterns match as
they do at load time. tests/test_architectures.py checks every builder against a meta-device
build of the real transformers class, group by group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qcli.errors import UsageError
from qcli.model.spec import AttentionShape, ModelSpec, Role, TensorSpec, cfg_int

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


def _head_dim(cfg: Cfg) -> int:
    hidden, heads = cfg_int(cfg, "hidden_size"), cfg_int(cfg, "num_attention_heads")
    head_dim = cfg.get("head_dim")
    if head_dim is None:
        if hidden % heads:
            raise UsageError("config.json: hidden_size is not divisible by num_attention_heads")
        return hidden // heads
    return cfg_int(cfg, "head_dim")


def _layer_types(cfg: Cfg, layers: int) -> list[str]:
    """Return each layer's attention type as transformers 5 derives it when the config omits it."""
    layer_types = cfg.get("layer_types")
    if isinstance(layer_types, list) and len(layer_types) == layers:
        return [str(t) for t in layer_types]
    mt = cfg.get("model_type")
    if mt == "gemma2":  # Gemma 2 alternates: sliding, full, sliding, ...
        return ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)]
    if mt == "gemma3_text":  # Gemma 3: five sliding layers, then one full (sliding_window_pattern 6)
        pattern = cfg.get("sliding_window_pattern") or 6
        return ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(layers)]
    sliding = cfg.get("sliding_window") and cfg.get("use_sliding_window", True) and mt in {"mistral", "mixtral", "phi3"}
    return ["sliding_attention" if sliding else "full_attention"] * layers


def _windows(cfg: Cfg, layers: int) -> list[int | None]:
    """Return the attention window of each layer (None = full attention)."""
    window = cfg.get("sliding_window") or (4096 if cfg.get("model_type") in {"gemma2", "gemma3_text"} else None)
    return [int(window) if t == "sliding_attention" and window else None for t in _layer_types(cfg, layers)]


def attention_shape(cfg: Cfg) -> AttentionShape:
    """Return the KV-cache shape of a decoder config (GQA/MQA aware)."""
    names = {  # gpt2 and falcon spell the common keys differently
        "num_hidden_layers": ("num_hidden_layers", "n_layer"),
        "hidden_size": ("hidden_size", "n_embd"),
        "num_attention_heads": ("num_attention_heads", "n_head"),
    }
    norm = dict(cfg)
    for key, aliases in names.items():
        for alias in aliases:
            if alias in cfg:
                norm[key] = cfg[alias]
                break
    layers = cfg_int(norm, "num_hidden_layers")
    heads = cfg_int(norm, "num_attention_heads")
    kv = norm.get("num_key_value_heads") or norm.get("num_kv_heads")
    if cfg.get("multi_query") and not cfg.get("new_decoder_architecture"):
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


def _rope_buffers(b: _Builder, prefix: str, rotary_dim: int, count: int = 1, names: tuple[str, ...] = ("",)) -> None:
    # transformers keeps inv_freq and original_inv_freq as fp32 buffers of rotary_dim/2 each.
    for n in names:
        for buf in ("inv_freq", "original_inv_freq"):
            b.add(f"{prefix}{n}.{buf}", (rotary_dim // 2,), "buffer", dtype="float32")


def _spec(cfg: Cfg, b: _Builder, tied: bool, attn: AttentionShape | None = None, **kw: Any) -> ModelSpec:
    return ModelSpec(
        model_type=cfg["model_type"],
        tensors=b.tensors,
        attention=attn or attention_shape(cfg),
        vocab_size=cfg_int(cfg, "vocab_size"),
        tied_embeddings=tied,
        max_position_embeddings=cfg.get("max_position_embeddings") or cfg.get("n_positions"),
        **kw,
    )


def _moe_layer(cfg: Cfg, i: int, experts_key: str) -> bool:
    experts = cfg.get(experts_key) or 0
    if not experts or i in (cfg.get("mlp_only_layers") or []):
        return False
    return (i + 1) % (cfg.get("decoder_sparse_step") or 1) == 0


def llama_like(cfg: Cfg) -> ModelSpec:
    """Return llama, mistral, mixtral, qwen2(_moe), qwen3(_moe) and gemma(2/3) tensor lists."""
    mt = cfg["model_type"]
    h, vocab = cfg_int(cfg, "hidden_size"), cfg_int(cfg, "vocab_size")
    layers, heads = cfg_int(cfg, "num_hidden_layers"), cfg_int(cfg, "num_attention_heads")
    kv = cfg_int(cfg, "num_key_value_heads", heads)
    hd = _head_dim(cfg)
    gemma = mt.startswith("gemma")
    tied = bool(cfg.get("tie_word_embeddings", gemma))
    qkv_bias = mt in {"qwen2", "qwen2_moe"} or bool(cfg.get("attention_bias", False))
    o_bias = bool(cfg.get("attention_bias", False)) and mt not in {"qwen2", "qwen2_moe"}
    mlp_bias = bool(cfg.get("mlp_bias", False))
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
            e, inter = cfg_int(cfg, "num_local_experts"), cfg_int(cfg, "intermediate_size")
            b.add(f"{p}.mlp.gate.weight", (e, h), "router")
            b.add(f"{p}.mlp.experts.gate_up_proj", (e, 2 * inter, h), "experts")
            b.add(f"{p}.mlp.experts.down_proj", (e, h, inter), "experts")
        elif mt in {"qwen2_moe", "qwen3_moe"} and _moe_layer(cfg, i, "num_experts"):
            e, inter = cfg_int(cfg, "num_experts"), cfg_int(cfg, "moe_intermediate_size")
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
    if gemma:  # Gemma scales embeddings by sqrt(hidden): a 0-d fp32 buffer
        b.add("model.embed_tokens.embed_scale", (), "buffer", dtype="float32")
    if mt == "gemma3_text":  # one rotary table per attention type present
        types = [t for t in ("sliding_attention", "full_attention") if t in _layer_types(cfg, layers)]
        for t in types:
            for buf in ("inv_freq", "original_inv_freq"):
                b.add(f"model.rotary_emb.{t}_{buf}", (hd // 2,), "buffer", dtype="float32")
    else:
        _rope_buffers(b, "model.rotary_emb", hd)
    return _spec(cfg, b, tied)


def phi3(cfg: Cfg) -> ModelSpec:
    """Return the Phi-3 tensor list (fused qkv_proj and gate_up_proj)."""
    h, vocab = cfg_int(cfg, "hidden_size"), cfg_int(cfg, "vocab_size")
    layers, heads = cfg_int(cfg, "num_hidden_layers"), cfg_int(cfg, "num_attention_heads")
    kv, hd, inter = cfg_int(cfg, "num_key_value_heads", heads), _head_dim(cfg), cfg_int(cfg, "intermediate_size")
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
    rotary = int(hd * float(cfg.get("partial_rotary_factor", 1.0)))
    _rope_buffers(b, "model.rotary_emb", rotary)
    return _spec(cfg, b, tied)


def phi(cfg: Cfg) -> ModelSpec:
    """Return the Phi-1/1.5/2 tensor list (LayerNorm with bias, biased linears, lm_head bias)."""
    h, vocab = cfg_int(cfg, "hidden_size"), cfg_int(cfg, "vocab_size")
    layers, heads = cfg_int(cfg, "num_hidden_layers"), cfg_int(cfg, "num_attention_heads")
    kv, hd, inter = cfg_int(cfg, "num_key_value_heads", heads), _head_dim(cfg), cfg_int(cfg, "intermediate_size")
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
    rotary = int(hd * float(cfg.get("partial_rotary_factor", 0.5)))
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
    _rope_buffers(
        b, "gpt_neox.rotary_emb", int(hd * float(cfg.get("rotary_pct", cfg.get("partial_rotary_factor", 0.25))))
    )
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
    if cfg.get("do_layer_norm_before", True) and not cfg.get("_remove_final_layer_norm", False):
        b.norm(f"{p0}.final_layer_norm", h, bias=cfg.get("layer_norm_elementwise_affine", True))
    for i in range(layers):
        p = f"{p0}.layers.{i}"
        for n in ("k_proj", "v_proj", "q_proj", "out_proj"):
            b.linear(f"{p}.self_attn.{n}", h, h, bias)
        b.norm(f"{p}.self_attn_layer_norm", h, bias=True)
        b.linear(f"{p}.fc1", ffn, h, bias)
        b.linear(f"{p}.fc2", h, ffn, bias)
        b.norm(f"{p}.final_layer_norm", h, bias=True)
    if not tied:
        b.add("lm_head.weight", (vocab, proj), "lm_head")
    return _spec(cfg, b, tied)


def falcon(cfg: Cfg) -> ModelSpec:
    """Return the Falcon tensor list (fused query_key_value; MQA or grouped KV)."""
    h, vocab = cfg_int(cfg, "hidden_size"), cfg_int(cfg, "vocab_size")
    layers, heads = cfg_int(cfg, "num_hidden_layers"), cfg_int(cfg, "num_attention_heads")
    hd = h // heads
    new_arch = bool(cfg.get("new_decoder_architecture"))
    if new_arch:
        kv = cfg_int(cfg, "num_kv_heads", heads)
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
        if new_arch and cfg.get("num_ln_in_parallel_attn", 2) == 2:
            b.norm(f"{p}.ln_attn", h, bias=True)
            b.norm(f"{p}.ln_mlp", h, bias=True)
        else:
            b.norm(f"{p}.input_layernorm", h, bias=True)
            if not cfg.get("parallel_attn", True):
                b.norm(f"{p}.post_attention_layernorm", h, bias=True)
    b.norm("transformer.ln_f", h, bias=True)
    if not tied:
        b.add("lm_head.weight", (vocab, h), "lm_head")
    if cfg.get("rotary", not cfg.get("alibi", False)):
        _rope_buffers(b, "transformer.rotary_emb", hd)
    return _spec(cfg, b, tied)


def bert(cfg: Cfg) -> ModelSpec:
    """Return the BertModel tensor list (encoder with pooler; no KV cache)."""
    h, vocab = cfg_int(cfg, "hidden_size"), cfg_int(cfg, "vocab_size")
    layers, inter = cfg_int(cfg, "num_hidden_layers"), cfg_int(cfg, "intermediate_size")
    positions, types = cfg_int(cfg, "max_position_embeddings"), cfg_int(cfg, "type_vocab_size", 2)
    b = _Builder()
    b.add("embeddings.word_embeddings.weight", (vocab, h), "embedding")
    b.add("embeddings.position_embeddings.weight", (positions, h), "embedding")
    b.add("embeddings.token_type_embeddings.weight", (types, h), "embedding")
    b.norm("embeddings.LayerNorm", h, bias=True)
    for i in range(layers):
        p = f"encoder.layer.{i}"
        for n in ("query", "key", "value"):
            b.linear(f"{p}.attention.self.{n}", h, h, True)
        b.linear(f"{p}.attention.output.dense", h, h, True)
        b.norm(f"{p}.attention.output.LayerNorm", h, bias=True)
        b.linear(f"{p}.intermediate.dense", inter, h, True)
        b.linear(f"{p}.output.dense", h, inter, True)
        b.norm(f"{p}.output.LayerNorm", h, bias=True)
    b.linear("pooler.dense", h, h, True)
    # int64 position_ids and token_type_ids buffers, one row of max_position_embeddings each.
    b.add("embeddings.position_ids", (1, positions), "buffer", dtype="int64")
    b.add("embeddings.token_type_ids", (1, positions), "buffer", dtype="int64")
    return ModelSpec(
        model_type="bert", tensors=b.tensors, attention=None, vocab_size=vocab, max_position_embeddings=positions
    )


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
    "bert": bert,
}
