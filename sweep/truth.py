"""Ground truth from transformers itself: parameters, the bitsandbytes split and the cache bytes.

For one model type: its default config shrunk to a few layers, the class `qcli load` builds
(AutoModelForCausalLM) on the meta device, and

- the unique parameters after `tie_weights()` (transformers 5's init contexts leave ties undone);
- the modules bitsandbytes quantizes, read back from the model after transformers' own quantizer ran
  `preprocess_model` on it exactly as `from_pretrained` does (get_keys_to_not_convert,
  `_keep_in_fp32_modules`, should_convert_module, replace_with_bnb_linear): every module that came
  back as Linear4bit / Linear8bitLt;
- the bytes of every tensor storage the model's own cache object holds after a prefill of
  `batch × prompt` tokens and after one decode step (a sliding-window layer keeps a view into the
  whole prefill until the next step: the storage, not the view, is what stays allocated).

Imports torch and transformers: this is the test oracle, never imported by qcli.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

BATCH = 2
PROMPT = 24
WINDOW = 8  # sliding windows are shrunk below the prompt so the prefill peak and the steady state differ
DTYPE = "bfloat16"
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers", "num_decoder_layers")
WINDOW_KEYS = ("sliding_window", "attention_chunk_size")


def _index_lists(d: dict[str, Any], n_layers: int) -> list[str]:
    """Return the keys holding lists of layer indices (attn_layer_indices, mlp_only_layers, ...)."""
    return [
        k
        for k, v in d.items()
        if isinstance(v, list)
        and v
        and any(word in k for word in ("ind", "idx", "layers", "ids"))
        and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n_layers for i in v)
    ]


def _pick_layers(d: dict[str, Any], n_layers: int, base: int) -> list[int]:
    """Return the layer indices to keep: the first `base`, plus the first layer of every kind."""
    keep = list(range(min(base, n_layers)))
    for key in _index_lists(d, n_layers):  # a hybrid's attention layers, say: keep the first of them
        if d[key][0] not in keep:
            keep.append(d[key][0])
    for value in d.values():
        if isinstance(value, list) and len(value) == n_layers and all(isinstance(v, str) for v in value):
            for kind in dict.fromkeys(value):
                first = value.index(kind)
                if first not in keep:
                    keep.append(first)
        if isinstance(value, str) and len(value) == n_layers and n_layers > 3:  # nemotron_h "M-M*-..."
            for kind in dict.fromkeys(value):
                first = value.index(kind)
                if first not in keep:
                    keep.append(first)
    return sorted(keep)


def _shrink_dict(d: dict[str, Any], base: int) -> dict[str, Any]:
    """Return a config dict with fewer layers; per-layer lists and patterns follow the kept layers."""
    d = dict(d)
    for key, value in list(d.items()):
        if isinstance(value, dict) and ("model_type" in value or any(k in value for k in LAYER_KEYS)):
            d[key] = _shrink_dict(value, base)
    for key in LAYER_KEYS:
        n_layers = d.get(key)
        if not isinstance(n_layers, int) or isinstance(n_layers, bool) or n_layers <= base:
            continue
        keep = _pick_layers(d, n_layers, base)
        keep = sorted(keep)
        index_keys = _index_lists(d, n_layers)
        d[key] = len(keep)
        for k in index_keys:
            d[k] = [keep.index(i) for i in d[k] if i in keep]
        for k, v in list(d.items()):
            if k in index_keys:
                continue
            if isinstance(v, list) and len(v) == n_layers:
                d[k] = [v[i] for i in keep]
            elif isinstance(v, str) and len(v) == n_layers and n_layers > 3:
                d[k] = "".join(v[i] for i in keep)
        # Hybrids that place layers by period/offset (jamba): bring the first of each kind into range.
        for k in list(d):
            if k.endswith("_layer_period") and isinstance(d[k], int) and d[k] > len(keep):
                d[k] = 2
                off = k.replace("_period", "_offset")
                if isinstance(d.get(off), int):
                    d[off] = 1
    for key in WINDOW_KEYS:
        if isinstance(d.get(key), int) and not isinstance(d.get(key), bool) and d[key] > WINDOW:
            d[key] = WINDOW
    return d


# Configs real checkpoints use that a type's default config does not exercise: name -> (type, overrides, keys
# dropped from the saved config.json).
VARIANTS: dict[str, tuple[str, dict[str, Any], tuple[str, ...]]] = {
    # Falcon-40B's shape: grouped KV that transformers expands to every query head before caching.
    "falcon@new_decoder_architecture": (
        "falcon",
        {
            "new_decoder_architecture": True,
            "num_kv_heads": 8,
            "num_attention_heads": 128,
            "hidden_size": 8192,
            "num_ln_in_parallel_attn": None,
            "parallel_attn": True,
        },
        (),
    ),
    # A transformers-4 Qwen2 config with sliding windows and no layer_types (transformers derives them).
    "qwen2@use_sliding_window": (
        "qwen2",
        {"use_sliding_window": True, "sliding_window": 4096, "max_window_layers": 1},
        ("layer_types",),
    ),
    "mistral@no_window": ("mistral", {"sliding_window": None}, ()),
    # Hybrids whose default config has no attention layer (transformers cannot run their cache then).
    "bamba@attention": ("bamba", {"attn_layer_indices": [1]}, ()),
    "granitemoehybrid@attention": (
        "granitemoehybrid",
        {"layer_types": ["linear_attention", "full_attention"], "num_hidden_layers": 2},
        (),
    ),
    "qwen3_moe@dense_every_other": ("qwen3_moe", {"decoder_sparse_step": 2, "mlp_only_layers": [0]}, ()),
}


def shrunk_config(model_type: str, base: int = 2, shrink: bool = True) -> Any:
    """Return transformers' default config of a model type (or a VARIANTS name), shrunk to a few layers."""
    from transformers import AutoConfig

    mt, overrides, _ = VARIANTS.get(model_type, (model_type, {}, ()))
    cfg = AutoConfig.for_model(mt)
    d = {**cfg.to_dict(), **overrides}
    if overrides.get("use_sliding_window") or "layer_types" in VARIANTS.get(model_type, ("", {}, ()))[2]:
        d.pop("layer_types", None)  # let the config class derive them again
    small = _shrink_dict(d, base) if shrink else d
    return type(cfg).from_dict(small)


def model_class(config: Any) -> type:
    """Return the class `AutoModelForCausalLM.from_pretrained` instantiates for this config."""
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.auto_factory import _get_model_class

    return _get_model_class(config, AutoModelForCausalLM._model_mapping)


def saved_config(config: Any, cls: type, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """Return config.json as `model.save_pretrained` writes it (diff against defaults, architectures set)."""
    config = copy.deepcopy(config)
    config.architectures = [cls.__name__]
    with tempfile.TemporaryDirectory() as tmp:
        config.save_pretrained(tmp)
        saved = json.loads((Path(tmp) / "config.json").read_text())
    for key in drop:
        saved.pop(key, None)
    return saved


def meta_model(config: Any, dtype: str = DTYPE) -> Any:
    """Return the model on the meta device with its weights tied."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(copy.deepcopy(config), dtype=getattr(torch, dtype))
    model.tie_weights()
    return model


def quantized_modules(config: Any, bits: int, skip_modules: list[str] | None = None) -> list[str]:
    """Return the modules bitsandbytes replaces, built as `from_pretrained(quantization_config=...)` does."""
    import bitsandbytes as bnb
    from transformers import BitsAndBytesConfig
    from transformers.quantizers import AutoHfQuantizer
    from transformers.utils.generic import ContextManagers

    kwargs: dict[str, Any] = {"load_in_4bit": True} if bits == 4 else {"load_in_8bit": True}
    if skip_modules is not None:
        kwargs["llm_int8_skip_modules"] = skip_modules
    quantizer = AutoHfQuantizer.from_config(BitsAndBytesConfig(**kwargs), pre_quantized=False)
    cls = model_class(config)
    dtype = getattr(torch, DTYPE)
    with ContextManagers(cls.get_init_context(dtype, True, False, None)):
        model = cls(copy.deepcopy(config))
        quantizer.preprocess_model(model=model, dtype=dtype, device_map=None, checkpoint_files=None, use_kernels=False)
    kinds = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    return [name for name, module in model.named_modules() if isinstance(module, kinds)]


def _cache_tensors(obj: Any, found: dict[int, Any], depth: int = 0) -> None:
    """Collect every tensor reachable from a cache object (layers, lists, dicts, attributes).

    Written here again on purpose (qcli/model/cache_probe.py walks caches the same way): the truth side
    of the sweep uses none of qcli's model code, so a bug there cannot agree with itself.
    """
    if depth > 6 or obj is None:
        return
    if isinstance(obj, torch.Tensor):
        base = obj._base if obj._base is not None else obj
        found.setdefault(id(base), base)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _cache_tensors(item, found, depth + 1)
    elif isinstance(obj, dict):
        for item in obj.values():
            _cache_tensors(item, found, depth + 1)
    elif hasattr(obj, "__dict__") and not isinstance(obj, (type, torch.nn.Module)):
        for item in vars(obj).values():
            _cache_tensors(item, found, depth + 1)


def cache_bytes(cache: Any) -> tuple[int, list[int]]:
    """Return the bytes of the cache's state tensors (storage, ≥ 2-D) in total and per cache layer.

    0-d/1-d bookkeeping tensors (a sliding window's length, cumulative counters) are left out.
    """
    per_layer: list[int] = []
    seen: set[int] = set()
    layers = getattr(cache, "layers", None)
    for layer in layers or []:
        found: dict[int, Any] = {}
        _cache_tensors(layer, found)
        size = 0
        for key, t in found.items():
            if key not in seen and t.dim() >= 2:
                seen.add(key)
                size += t.untyped_storage().nbytes()
        per_layer.append(size)
    found = {}
    _cache_tensors(cache, found)
    rest = sum(t.untyped_storage().nbytes() for k, t in found.items() if k not in seen and t.dim() >= 2)
    return sum(per_layer) + rest, per_layer


def _returned_cache(out: Any) -> Any:
    """Return the cache a forward returned (`cache`, `past_key_values`, or `cache_params` for mamba-style models)."""
    for key in ("cache", "past_key_values", "cache_params"):  # `cache` from transformers 5.24 on
        if out.get(key) is not None:
            return out[key]
    return None


def measure_cache(model: Any, batch: int = BATCH, prompt: int = PROMPT, mask: bool = False) -> dict[str, Any]:
    """Return the cache bytes after a prefill of batch × prompt tokens and after one decode step."""
    device = next(model.parameters()).device
    ids = torch.ones(batch, prompt, dtype=torch.long, device=device)
    kwargs = {"attention_mask": torch.ones_like(ids)} if mask else {}
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True, **kwargs)
        cache = _returned_cache(out)
        if cache is None:
            return {"type": None}
        prefill, prefill_layers = cache_bytes(cache)
        step = torch.ones(batch, 1, dtype=torch.long, device=device)
        # The forward takes the cache back by the name it returned it under (`cache` from transformers 5.24 on).
        # (5.24's outputs answer `in` for the deprecated names too: ask for `cache` first)
        name = "cache" if "cache" in out else "cache_params" if "cache_params" in out else "past_key_values"
        kwargs = {name: cache}
        if name == "cache_params" or type(cache).__name__.startswith("Mamba"):  # told where the decode step is
            kwargs["cache_position"] = torch.tensor([prompt], device=device)
        if mask:
            kwargs["attention_mask"] = torch.ones(batch, prompt + 1, dtype=torch.long, device=device)
        try:
            out = model(input_ids=step, use_cache=True, **kwargs)
            decode, decode_layers = cache_bytes(_returned_cache(out))
        except Exception:  # the model cannot decode from this cache (no attention layer to count tokens)
            decode, decode_layers = None, None
    return {
        "type": type(cache).__name__,
        "layer_types": [type(layer).__name__ for layer in getattr(cache, "layers", None) or []],
        "prefill_bytes": prefill,
        "decode_bytes": decode,
        "prefill_layers": prefill_layers,
        "decode_layers": decode_layers,
    }


CPU_PARAMS_LIMIT = 400_000_000  # a real CPU model larger than this (0.8 GB in bf16) is not built


def _tiny_real(config: Any) -> Any:
    """Return a real CPU model (bfloat16, vocabulary cut to 512) for caches the meta device cannot run."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(config)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text, "vocab_size", 0) and text.vocab_size > 512:
        text.vocab_size = 512
    params = sum(p.numel() for p in meta_model(config).parameters())
    if params > CPU_PARAMS_LIMIT:
        raise MemoryError(f"{params:,} parameters: too large to build on the CPU for a cache truth")
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, DTYPE))
    return model.eval()


def truth(model_type: str) -> dict[str, Any]:
    """Return the ground truth of one model type (see the module docstring)."""
    start = time.perf_counter()
    try:
        config = shrunk_config(model_type)
        cls = model_class(config)
        model = meta_model(config)
        shrunk = True
    except Exception:  # a shrink the model rejects: its default config, whole
        config = shrunk_config(model_type, shrink=False)
        cls = model_class(config)
        model = meta_model(config)
        shrunk = False
    result: dict[str, Any] = {
        "model_type": model_type,
        "class": cls.__name__,
        "shrunk": shrunk,
        "config": saved_config(config, cls, VARIANTS.get(model_type, ("", {}, ()))[2]),
        "params": sum(p.numel() for p in model.parameters()),
    }
    shapes = {name: module.weight.numel() for name, module in model.named_modules() if hasattr(module, "weight")}
    q4 = quantized_modules(config, 4)
    q8 = quantized_modules(config, 8)
    result["quantized_4bit"] = sorted(q4)
    result["quantized_4bit_params"] = sum(shapes.get(m, 0) for m in q4)
    result["quantized_8bit_same"] = sorted(q8) == sorted(q4)
    result["cache_batch"], result["cache_prompt"], result["cache_dtype"] = BATCH, PROMPT, DTYPE
    try:
        try:
            result["cache"] = {"path": "meta", **measure_cache(model)}
        except Exception:  # masks that call .item(): eager attention and an explicit mask, still on meta
            model.set_attn_implementation("eager")
            result["cache"] = {"path": "meta (eager, mask)", **measure_cache(model, mask=True)}
    except Exception as meta_exc:
        try:
            result["cache"] = {"path": "cpu", **measure_cache(_tiny_real(config))}
        except Exception as exc:
            result["cache"] = {"path": None, "error": f"meta: {meta_exc!r:.200}; cpu: {exc!r:.200}"}
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


if __name__ == "__main__":
    import sys

    print(json.dumps({k: v for k, v in truth(sys.argv[1]).items() if k != "config"}, indent=1))
