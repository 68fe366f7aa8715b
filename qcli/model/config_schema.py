"""The config.json keys qcli reads, validated before anything is built from them.

A pydantic model of those keys only (other keys pass through untouched): sizes are strict positive
integers within bounds (a whole-number float such as `64.0` is read as 64), flags are real booleans
(`"false"` is not false), fractions are numbers in (0, 1]; cross-key checks where transformers could not
build the model (key/value heads, layer_types). transformers' own config classes coerce silently
(`bool("false")` is True) or fail deep inside a model constructor; qcli refuses with the key named instead.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from qcli.errors import UsageError

# Bounds far beyond any released model (the largest have ~200 layers, hidden sizes of ~32k, vocabularies
# of ~1M and contexts of ~10M tokens): a value past them is a typo or an attack, and a layer count of
# 1e9 would make the analytic builders loop for minutes. Products of sizes within these bounds can still be
# absurd (2^31 x 2^31 x 10,000 layers): qcli.model.describe refuses a model past units.MAX_PARAMS.
MAX_LAYERS = 10_000
MAX_DIM = 2**31 - 1
MAX_EXPERTS = 2**16


def _whole(value: Any) -> Any:
    """Return an integral float (JSON `1200.0`, as some shipped configs write it: transformers' own
    musicflamingo config has max_position_embeddings 1200.0) as an int; leave the rest for the strict check,
    so `100.5`, `"64"` and `true` are refused. validate_config returns the config with these ints, which is
    what the builders read."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_DIM:
        return int(value)
    return value


Whole = Annotated[StrictInt, BeforeValidator(_whole)]
Layers = Annotated[Whole, Field(ge=1, le=MAX_LAYERS)]
# A layer index or a count of layers that may be 0 (no dense layers first, no sliding layers).
LayerIndex = Annotated[Whole, Field(ge=0, le=MAX_LAYERS)]
Dim = Annotated[Whole, Field(ge=1, le=MAX_DIM)]
# 0 is a real value for these in shipped configs: no sliding window (qwen2_moe), no token types (deberta),
# head_dim derived from the hidden size (glm5_next), no shared expert or no experts at all.
Size0 = Annotated[Whole, Field(ge=0, le=MAX_DIM)]
Experts = Annotated[Whole, Field(ge=0, le=MAX_EXPERTS)]
# Some families give a per-layer or per-stage list (segformer's heads, gemma3n's and ernie's MLP sizes) or a
# per-tower dict (lxmert's layers): each entry is checked the same way.
Dims = Dim | list[Dim]
Sizes0 = Size0 | list[Size0]
Fraction = Annotated[float, Field(gt=0, le=1, strict=True, allow_inf_nan=False)]


class _Keys(BaseModel):
    """One config (or its text_config): the keys qcli's builders and planner read."""

    # defer_build: the validator is built on first use, not at import (`estimate --params` never uses it)
    model_config = ConfigDict(extra="allow", populate_by_name=True, defer_build=True)

    model_type: StrictStr | None = None
    architectures: list[StrictStr] | None = None
    vocab_size: Dim | None = None
    hidden_size: Dim | None = None
    n_embd: Dim | None = None
    n_embed: Dim | None = None  # Falcon: an older name of hidden_size, which it overrides
    intermediate_size: Sizes0 | None = None
    n_inner: Dim | None = None
    ffn_dim: Dim | None = None
    ffn_hidden_size: Dim | None = None
    word_embed_proj_dim: Dim | None = None
    num_hidden_layers: Layers | dict[str, Layers] | None = None
    n_layer: Layers | None = None
    num_attention_heads: Dims | None = None
    n_head: Dim | None = None
    num_key_value_heads: Dims | None = None
    num_kv_heads: Dim | None = None
    head_dim: Size0 | None = None
    max_position_embeddings: Dim | None = None
    n_positions: Dim | None = None
    type_vocab_size: Size0 | None = None
    sliding_window: Size0 | None = None
    sliding_window_pattern: Layers | None = None
    layer_types: list[StrictStr] | None = None
    num_local_experts: Experts | None = None
    num_experts: Experts | None = None
    moe_intermediate_size: Sizes0 | None = None
    shared_expert_intermediate_size: Size0 | None = None
    decoder_sparse_step: Layers | None = None
    mlp_only_layers: list[LayerIndex] | None = None
    num_ln_in_parallel_attn: Annotated[Whole, Field(ge=1, le=2)] | None = None
    max_window_layers: LayerIndex | None = None  # qwen2/qwen3: sliding from this layer on
    # DeepSeek-V3's MLA and MoE (other MLA families share the names): null q_lora_rank means no query
    # compression; qk_rope_head_dim is 0 in glm5_next, first_k_dense_replace 0 in deepseek_v2.
    q_lora_rank: Dim | None = None
    kv_lora_rank: Dim | None = None
    qk_nope_head_dim: Size0 | None = None
    qk_rope_head_dim: Size0 | None = None
    v_head_dim: Dim | None = None
    n_routed_experts: Experts | None = None
    n_shared_experts: Experts | None = None
    first_k_dense_replace: LayerIndex | None = None
    partial_rotary_factor: Fraction | None = None
    rotary_pct: Fraction | None = None
    tie_word_embeddings: StrictBool | None = None
    attention_bias: StrictBool | None = None
    mlp_bias: StrictBool | None = None
    qkv_bias: StrictBool | list[StrictBool] | None = None  # Qwen2-MoE: one flag; CvT: one per stage
    add_cross_attention: StrictBool | None = None
    qk_layernorm: StrictBool | None = None
    multi_query: StrictBool | None = None
    new_decoder_architecture: StrictBool | None = None
    parallel_attn: StrictBool | None = None
    bias: StrictBool | None = None
    alibi: StrictBool | None = None
    rotary: StrictBool | None = None
    use_sliding_window: StrictBool | None = None
    enable_bias: StrictBool | None = None
    do_layer_norm_before: StrictBool | None = None
    layer_norm_elementwise_affine: StrictBool | None = None
    remove_final_layer_norm: StrictBool | None = Field(None, alias="_remove_final_layer_norm")
    quantization_config: dict[str, Any] | None = None
    auto_map: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _kv_heads_group_the_heads(self) -> _Keys:
        # transformers repeats each key/value head over heads // kv_heads query heads (`repeat_kv`): a count
        # that does not divide the heads describes a model no attention layer can run.
        heads = self.num_attention_heads if self.num_attention_heads is not None else self.n_head
        for key in ("num_key_value_heads", "num_kv_heads"):
            kv = getattr(self, key)
            if isinstance(heads, int) and isinstance(kv, int) and heads % kv:
                relation = "is more than" if kv > heads else "does not divide"
                raise ValueError(
                    f"{key} {kv} {relation} num_attention_heads {heads} (each key/value head serves a whole "
                    "group of query heads): fix one of the two"
                )
        return self

    @model_validator(mode="after")
    def _layer_types_fit(self) -> _Keys:
        from qcli.model.architectures import BUILDERS  # the families whose formulas read layer_types

        types, layers = self.layer_types, self.num_hidden_layers
        if types is None or self.model_type not in BUILDERS:
            return self  # other families: their config class checks its own (on the meta device)
        unknown = next((t for t in types if t not in LAYER_TYPES), None)
        if unknown is not None:
            raise ValueError(
                f"layer_types: unknown layer type {shown(unknown)} (transformers accepts "
                "full_attention, sliding_attention, chunked_attention, linear_attention, …)"
            )
        if isinstance(layers, int) and len(types) != layers:
            raise ValueError(
                f"layer_types has {len(types)} entries and num_hidden_layers is {layers}: give one per layer"
            )
        return self


# The layer types transformers' base config check accepts (transformers 5 configuration_utils:
# ALLOWED_ATTN_LAYER_TYPES, plus the legacy names _LEGACY_LAYER_TYPE_REMAP renames first). The analytic
# families use that base check (PreTrainedConfig.validate_layer_type), with its length rule.
LAYER_TYPES = frozenset({
    "full_attention", "sliding_attention", "chunked_attention", "window_attention", "indexed_attention",
    "compressed_sparse_attention", "heavily_compressed_attention", "minimax_m3_sparse", "conv", "moe", "hybrid",
    "hybrid_sliding", "reference_sliding_attention", "linear_attention",
    "mamba", "attention", "deepseek_sparse_attention", "qwen_sparse_attention",  # legacy names
})  # fmt: skip


class ConfigKeys(_Keys):
    text_config: _Keys | None = None


_TYPE_TAGS = frozenset({"bool", "int", "float", "str"})


def _clean_loc(err: Any) -> tuple[str | int, ...]:
    """Return an error's location without pydantic's union-branch tags (`function-after[...]`, `list[...]`, and
    a plain type's name such as `bool` below a key)."""
    return tuple(
        p
        for i, p in enumerate(err["loc"])
        if isinstance(p, int) or (str(p).replace("_", "a").isalnum() and not (i and p in _TYPE_TAGS))
    )


def shown(value: Any, limit: int = 40) -> str:
    """Return a value as echoed in a message: its repr, cut to `limit` characters (a 100 kB string is not
    echoed); a list or dict by its type alone."""
    if isinstance(value, (list, dict)):
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 10] + "…"


def _problem(err: Any) -> str:
    loc = ".".join(str(p) for p in _clean_loc(err))
    where = f"{loc}: " if loc else ""
    if err["type"] == "value_error":  # one of the checks above, which words its own message
        return where + err["msg"].removeprefix("Value error, ")
    msg = err["msg"].replace(" or instance of _Keys", "")
    return f"{where}{msg[:1].lower()}{msg[1:]}, got {shown(err.get('input'))}"


def _problems(exc: ValidationError) -> list[str]:
    """Return one problem per config key: of a union's branch errors, the most specific (deepest) one."""
    best: dict[Any, Any] = {}
    for err in exc.errors():
        loc = _clean_loc(err)
        key = loc[:2] if loc and loc[0] == "text_config" else loc[:1]
        if key not in best or len(loc) > len(_clean_loc(best[key])):
            best[key] = err
    return [_problem(e) for e in best.values()]


def _normalized(raw: dict[str, Any], keys: _Keys) -> dict[str, Any]:
    """Return `raw` with each key the schema declares as validated (a whole-number float of an integer key,
    `64.0`, becomes `64`); other keys as they are, in their order."""
    out = dict(raw)
    for name, info in type(keys).model_fields.items():
        key = info.alias or name
        value = getattr(keys, name)
        if isinstance(value, _Keys):
            out[key] = _normalized(raw[key], value)
        elif key in raw and _has_float(raw[key]) and not _has_float(value):
            out[key] = value
    return out


def _has_float(value: Any) -> bool:
    items = value if isinstance(value, list) else value.values() if isinstance(value, dict) else [value]
    return any(isinstance(v, float) for v in items)


def whole_floats(raw: dict[str, Any], checked: dict[str, Any]) -> list[str]:
    """Return the top-level keys of `raw` whose whole-number floats `checked` (validate_config's answer)
    reads as integers."""
    return [k for k in raw if k in checked and _has_float(raw[k]) and not _has_float(checked[k])]


def validate_config(cfg: Any, source: str = "config.json") -> dict[str, Any]:
    """Return `cfg` with the keys qcli reads validated (whole-number floats of integer keys as ints); raise a
    UsageError naming the first keys of `cfg` that qcli reads and cannot use."""
    if not isinstance(cfg, dict):
        raise UsageError(f"{source}: the top level must be a JSON object")
    try:
        keys = ConfigKeys.model_validate(cfg)
    except ValidationError as exc:
        problems = _problems(exc)
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        problems = problems[:3]
        raise UsageError(f"{source}: " + "; ".join(problems) + more) from None
    return _normalized(cfg, keys)
