"""The meta-device fallback: build a model through transformers without allocating weights, and read
its tensors back as a ModelSpec. transformers and torch are imported inside the functions."""

from __future__ import annotations

import contextlib
from typing import Any, Literal

from qcli.errors import UsageError
from qcli.extras import require_load_extra
from qcli.model.architectures import attention_shape, config_dtype
from qcli.model.spec import ModelSpec, Role, TensorSpec

# Encoder-only families: the meta fallback builds the bare AutoModel for them.
ENCODER_TYPES = frozenset({"bert", "roberta", "distilbert", "electra", "deberta", "deberta-v2", "xlm-roberta"})


def from_meta(cfg: dict[str, Any], trust_remote_code: bool = False) -> ModelSpec:
    """Return the ModelSpec of a model built on the meta device (transformers, imported lazily).

    Built under `torch.device("meta")` with weights tied afterwards: under transformers 5's
    `init_empty_weights()` tied embeddings come back untied and would be counted twice.
    """
    what = f"model_type {cfg.get('model_type')!r} has no analytic description; counting it on the meta device"
    require_load_extra(what, ("torch", "transformers"))
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

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
    with contextlib.suppress(UsageError):
        attention = attention_shape(cfg_text)
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
        config_dtype=config_dtype(cfg),
    )


