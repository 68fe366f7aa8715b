"""What a model is made of: its tensors (name, shape, role), grouped for memory planning.

Built analytically from config.json (qcli.architectures, no torch) or, for architectures qcli
does not know, on the meta device through transformers (imported lazily).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from math import prod
from typing import Any, Literal

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
}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the model: its parameter path, shape and role."""

    name: str
    shape: tuple[int, ...]
    role: Role
    dtype: str | None = None  # a fixed dtype (buffers); None means the load dtype
    out_features: int | None = None  # rows of a linear weight when the shape does not say (Conv1D)

    @property
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
    keep_in_fp32: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

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


# Encoder-only families: the meta fallback builds the bare AutoModel for them, as `load` does.
ENCODER_TYPES = frozenset({"bert", "roberta", "distilbert", "electra", "deberta", "deberta-v2", "xlm-roberta"})


def cfg_int(cfg: dict[str, Any], key: str, default: int | None = None, *, minimum: int = 1) -> int:
    """Return a positive integer from a config, or raise a UsageError naming the key."""
    value = cfg.get(key, default)
    if value is None:
        raise UsageError(f"config.json: missing {key!r}", "is this a transformers model config?")
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"config.json: {key!r} must be an integer >= {minimum}, got {value!r}")
    return value


def from_config(cfg: dict[str, Any], *, allow_meta: bool = True) -> ModelSpec:
    """Return the ModelSpec of a config dict: analytic when the architecture is known, else meta."""
    from qcli import architectures

    if not isinstance(cfg, dict):
        raise UsageError("config.json: the top level must be a JSON object")
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise UsageError("config.json: missing 'model_type'", "is this a transformers model config?")
    builder = architectures.BUILDERS.get(model_type)
    if builder is not None:
        spec = builder(cfg)
        spec.config_dtype = _config_dtype(cfg)
        return spec
    if not allow_meta:
        raise UsageError(f"config.json: model_type {model_type!r} has no analytic description")
    return from_meta(cfg)


def _config_dtype(cfg: dict[str, Any]) -> str | None:
    value = cfg.get("dtype") or cfg.get("torch_dtype")
    return value.removeprefix("torch.") if isinstance(value, str) else None


def from_meta(cfg: dict[str, Any], trust_remote_code: bool = False) -> ModelSpec:
    """Return the ModelSpec of a model built on the meta device (transformers, imported lazily).

    Built under `torch.device("meta")` with weights tied afterwards: under transformers 5's
    `init_empty_weights()` tied embeddings come back untied and would be counted twice.
    """
    try:
        import torch
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
    except ImportError as exc:  # pragma: no cover - transformers is a dependency
        raise UsageError(f"model_type {cfg.get('model_type')!r} needs transformers to count: {exc}") from exc
    try:
        config = AutoConfig.for_model(**cfg) if "model_type" in cfg else None
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"config.json: transformers cannot read it ({exc})", "check model_type") from exc
    archs = [str(a) for a in cfg.get("architectures") or []]
    causal = any("CausalLM" in a or "LMHead" in a for a in archs) or (
        not archs and not config.is_encoder_decoder and cfg["model_type"] not in ENCODER_TYPES
    )
    with torch.device("meta"):
        try:
            if not causal:
                raise ValueError("encoder")
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        except ValueError:
            model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    model.tie_weights()
    return spec_from_module(model, cfg, source="meta")


def spec_from_module(model: Any, cfg: dict[str, Any], source: Literal["analytic", "meta"] = "meta") -> ModelSpec:
    """Return the ModelSpec of an instantiated (meta or real) torch model."""
    import torch
    from torch import nn

    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover
        Conv1D = ()

    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tensors: list[TensorSpec] = []
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        for p_name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            shape = tuple(param.shape)
            out_features = None
            if module is out_emb and out_emb is not None and p_name == "weight":
                role: Role = "lm_head"
            elif isinstance(module, nn.Embedding):
                role = "embedding"
            elif (type(module) is nn.Linear or isinstance(module, Conv1D)) and p_name == "weight":
                role = "linear"
                if isinstance(module, Conv1D):
                    out_features = shape[1]
            elif isinstance(module, nn.Linear) and p_name == "weight":
                role = "linear_subclass"  # transformers' bnb integration converts exact nn.Linear only
            elif p_name == "bias":
                role = "bias"
            elif param.dim() == 3:
                role = "experts"
            elif "router" in type(module).__name__.lower():
                role = "router"
            elif "norm" in type(module).__name__.lower() or "norm" in name.lower():
                role = "norm"
            else:
                role = "other"
            tensors.append(TensorSpec(name, shape, role, out_features=out_features))
    for b_name, buf in model.named_buffers():
        dtype = str(buf.dtype).removeprefix("torch.") if buf.dtype != torch.float32 else "float32"
        tensors.append(TensorSpec(b_name, tuple(buf.shape), "buffer", dtype=dtype))
    cfg_text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    attention = None
    try:
        from qcli.architectures import attention_shape

        attention = attention_shape(cfg_text)
    except UsageError:
        pass
    return ModelSpec(
        model_type=str(cfg.get("model_type")),
        tensors=tensors,
        attention=attention,
        vocab_size=int(cfg_text.get("vocab_size") or 0),
        tied_embeddings=bool(
            out_emb is not None
            and any(t.role == "embedding" for t in tensors)
            and not any(t.role == "lm_head" for t in tensors)
        ),
        max_position_embeddings=cfg_text.get("max_position_embeddings"),
        source=source,
        keep_in_fp32=tuple(getattr(model, "_keep_in_fp32_modules", None) or ()),
        config_dtype=_config_dtype(cfg),
    )


def params_only(params: int) -> ModelSpec:
    """Return a one-tensor ModelSpec for a bare parameter count: every parameter quantizable.

    With no shapes known, the parameters are taken as one square-ish matrix (so int8 gets
    ceil(sqrt(n)) row scales and 4-bit gets one set of per-tensor constants).
    """
    from math import isqrt

    rows = max(1, isqrt(params))
    tensor = TensorSpec("all_parameters", (params,), "linear", out_features=rows)
    return ModelSpec(model_type="unknown", tensors=[tensor], attention=None, vocab_size=0, source="params")
