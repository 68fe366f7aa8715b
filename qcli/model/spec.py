"""What a model is made of: its tensors (name, shape, role), grouped for memory planning.

Built analytically from config.json (qcli.model.architectures, no torch) or, for architectures qcli
does not know, on the meta device through transformers (imported lazily).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from math import isqrt, prod
from typing import Any, Literal, NamedTuple

from qcli.errors import UsageError

Role = Literal[
    "linear", "linear_subclass", "embedding", "lm_head", "norm", "bias", "experts", "router", "buffer", "other"
]

# Group names reported in the table and in --json `groups`.
GROUP_OF_ROLE: dict[str, str] = {
    "linear": "quantizable_linear",
    "linear_subclass": "linear_not_converted",
    "embedding": "embeddings",
    "lm_head": "lm_head",
    "experts": "moe_experts",
    "router": "moe_routers",
    "norm": "norms_biases_other",
    "bias": "norms_biases_other",
    "other": "norms_biases_other",
    "buffer": "buffers",
}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the model: its parameter path, shape and role."""

    name: str
    shape: tuple[int, ...]
    role: Role
    dtype: str | None = None  # a fixed dtype (buffers); None means the load dtype
    out_features: int | None = None  # rows of a linear weight when the shape does not say (Conv1D)
    # lm_head only: whether its module is an exact nn.Linear / Conv1D, the only modules bitsandbytes converts.
    convertible: bool = True

    @cached_property  # frozen: the shape never changes, and plans read it thousands of times
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def module(self) -> str:
        return self.name.rsplit(".", 1)[0]

    @property
    def rows(self) -> int:
        """Return the output rows of a linear weight (int8 keeps one scale per row)."""
        if self.out_features is not None:
            return self.out_features
        return self.shape[0] if self.shape else 1


@dataclass
class AttentionShape:
    """What the KV cache depends on."""

    layers: int
    kv_heads: int
    head_dim: int
    hidden_size: int
    heads: int
    windows: list[int | None] = field(default_factory=list)  # per layer; None = full attention


DtypeElems = tuple[tuple[int, "str | None"], ...]  # (elements, fixed dtype or None for the cache dtype)


class CacheCounts(NamedTuple):
    """How many of each stored unit one cache layer holds after some tokens (see CacheLayer.counts)."""

    tokens: int  # per-token slots (K/V, a latent): a sliding window caps them while decoding
    entries: int  # compressed entries, one per closed window of `compress_rate` tokens
    pending: int  # token slots of the compressor's buffer (storage, not just the unclosed window)
    carried: int  # 1 once a window has closed: what the compressor carries into the next window


@dataclass(frozen=True)
class CacheLayer:
    """What one layer of transformers' cache holds for one sequence.

    `per_token` grows with every token (K and V, an MLA latent, an indexer key); `state` does not (a
    mamba conv + SSM state). A sliding-window layer's steady state holds `window` tokens of storage.
    A compressing layer (DeepSeek-V4's CSA/HCA) also keeps `per_entry` elements per closed window of
    `compress_rate` tokens, `pending` elements per buffered token and `carried` ones once a window closed.
    """

    kind: str  # full, sliding, state, full+state, sliding+state, none; +compressed for compressing layers
    per_token: DtypeElems = ()
    window: int | None = None
    state: DtypeElems = ()
    compress_rate: int | None = None
    per_entry: DtypeElems = ()
    pending: DtypeElems = ()
    carried: DtypeElems = ()

    def counts(self, tokens: int, *, prefill: bool) -> CacheCounts:
        """Return what the layer holds for `tokens` tokens: right after a prefill of them, or decoding.

        transformers (DeepseekV4HCACache, DynamicSlidingWindowLayer) keeps views of concatenations: after
        a prefill the window and the compressor's buffer still hold the whole prompt's storage. While
        decoding, the buffer is the tokens since the last closed window plus the new one, concatenated
        (a closing step keeps all `compress_rate` of them); right after a window closed it is the new token.
        """
        if tokens <= 0:
            return CacheCounts(0, 0, 0, 0)
        held = tokens if (prefill or self.window is None) else min(tokens, self.window)
        rate = self.compress_rate
        if not rate:
            return CacheCounts(held, 0, 0, 0)
        pending = tokens if prefill else (tokens - 1) % rate + 1
        entries = tokens // rate
        return CacheCounts(held, entries, pending, int(entries > 0))


@dataclass
class ModelSpec:
    """A model's tensors and shapes; tied weights appear once."""

    model_type: str
    tensors: list[TensorSpec]
    attention: AttentionShape | None
    vocab_size: int
    tied_embeddings: bool = False
    config_dtype: str | None = None
    max_position_embeddings: int | None = None
    source: Literal["analytic", "meta", "params"] = "analytic"
    keep_in_fp32: tuple[str, ...] = ()  # _keep_in_fp32_modules: float32 under float16 loads, never quantized
    notes: list[str] = field(default_factory=list)
    model_class: str | None = None  # the class `qcli load` builds, e.g. LlamaForCausalLM
    # The modules transformers' bnb quantizer keeps unquantized by default (get_keys_to_not_convert).
    default_skips: tuple[str, ...] | None = None
    cache: list[CacheLayer] | None = None  # per cache layer; None: sized from `attention`
    keep_in_fp32_strict: tuple[str, ...] = ()  # _keep_in_fp32_modules_strict: float32 under float16/bfloat16

    @property
    def parameters(self) -> list[TensorSpec]:
        return [t for t in self.tensors if t.role != "buffer"]

    @property
    def params(self) -> int:
        """Return the unique parameter count (tied weights once)."""
        return sum(t.numel for t in self.parameters)

    def groups(self) -> dict[str, int]:
        """Return parameters per group; lm_head is 0 when tied to the embeddings."""
        counts: Counter[str] = Counter({"quantizable_linear": 0, "embeddings": 0, "lm_head": 0})
        for t in self.parameters:
            counts[GROUP_OF_ROLE[t.role]] += t.numel
        return dict(counts)

    def linear_modules(self) -> list[str]:
        """Return the module paths whose weights bitsandbytes may quantize (nn.Linear / Conv1D)."""
        return [t.module for t in self.tensors if t.role == "linear"]


def cfg_int(cfg: dict[str, Any], key: str, default: int | None = None, *, minimum: int = 1) -> int:
    """Return a positive integer from a config, or raise a UsageError naming the key."""
    value = cfg.get(key, default)
    if value is None:
        raise UsageError(f"config.json: missing {key!r}", "is this a transformers model config?")
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"config.json: {key!r} must be an integer >= {minimum}, got {value!r}")
    return value


def params_only(params: int) -> ModelSpec:
    """Return a one-tensor ModelSpec for a bare parameter count: every parameter quantizable.

    With no shapes known, the parameters are taken as one square-ish matrix (so int8 gets
    ceil(sqrt(n)) row scales and 4-bit gets one set of per-tensor constants).
    """
    rows = max(1, isqrt(params))
    tensor = TensorSpec("all_parameters", (params,), "linear", out_features=rows)
    return ModelSpec(model_type="unknown", tensors=[tensor], attention=None, vocab_size=0, source="params")
