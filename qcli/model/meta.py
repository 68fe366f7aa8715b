"""The meta-device description: the class `qcli load` builds, made by transformers on the meta device.

torch and transformers are imported inside the functions: importing this module costs nothing. A
result is cached per (config content, transformers version) in qcli's cache dir, so the second
estimate of a model reads JSON instead of importing torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from qcli.errors import UsageError
from qcli.extras import require_load_extra
from qcli.model.architectures import attention_shape, config_dtype
from qcli.model.cache_probe import probe_cache
from qcli.model.installed import transformers_version
from qcli.model.spec import AttentionShape, CacheLayer, ModelSpec, Role, TensorSpec
from qcli.resources import cache_root

# Bump when what a cached spec holds changes: older entries are then ignored (4: compressing cache layers).
SPEC_CACHE_VERSION = 4
# CacheLayer fields that hold (elements, dtype) pairs.
ELEMS_FIELDS = ("per_token", "state", "per_entry", "pending", "carried")
# transformers' caches follow the model's dtype; the probe runs in bfloat16 so a state tensor kept in
# float32 (mamba's SSM state) shows as one with a fixed dtype.
PROBE_DTYPE = "bfloat16"


class UnknownModelType(UsageError):
    """A model_type the installed transformers does not know (without the repository's own code)."""


def code_files(code_dir: Path | None) -> list[Path]:
    """Return the repository's own Python files beside its config.json (what auto_map names), sorted."""
    if code_dir is None:
        return []
    return sorted(p for p in code_dir.glob("*.py") if p.is_file())


def _code_digest(code_dir: Path | None) -> str | None:
    """Return a digest of the repository's own code: the class it builds changes with it."""
    files = code_files(code_dir)
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _spec_cache_path(
    cfg: dict[str, Any], trust_remote_code: bool, cache_dir: Path, code_dir: Path | None = None
) -> Path | None:
    version = transformers_version()
    if version is None:
        return None
    code = _code_digest(code_dir) if trust_remote_code else None
    key = json.dumps([SPEC_CACHE_VERSION, version, trust_remote_code, cfg, code], sort_keys=True, default=str)
    return cache_dir / "specs" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def spec_to_json(spec: ModelSpec) -> dict[str, Any]:
    """Return a ModelSpec as plain JSON data (tensors as compact rows)."""
    data = asdict(spec)
    data["tensors"] = [[t.name, list(t.shape), t.role, t.dtype, t.out_features, t.convertible] for t in spec.tensors]
    return data


def spec_from_json(data: dict[str, Any]) -> ModelSpec:
    """Return the ModelSpec that spec_to_json wrote."""
    data = dict(data)
    data["tensors"] = [TensorSpec(n, tuple(s), r, d, o, c) for n, s, r, d, o, c in data["tensors"]]
    if data.get("attention") is not None:
        data["attention"] = AttentionShape(**data["attention"])
    if data.get("cache") is not None:
        data["cache"] = [_cache_layer_from_json(c) for c in data["cache"]]
    for key in ("keep_in_fp32", "keep_in_fp32_strict", "default_skips"):
        if data.get(key) is not None:
            data[key] = tuple(data[key])
    return ModelSpec(**data)


def _cache_layer_from_json(c: dict[str, Any]) -> CacheLayer:
    elems = {key: tuple((n, d) for n, d in c[key]) for key in ELEMS_FIELDS}
    return CacheLayer(kind=c["kind"], window=c["window"], compress_rate=c["compress_rate"], **elems)


def from_meta(
    cfg: dict[str, Any], trust_remote_code: bool = False, cache_dir: Path | None = None, code_dir: Path | None = None
) -> ModelSpec:
    """Return the ModelSpec of the class `load` builds, from the meta device or the spec cache.

    `code_dir` is the local model directory whose own code (`auto_map`) runs under trust_remote_code.
    The cache (qcli's cache dir, `specs/`) is keyed by the config's content, the transformers version,
    trust_remote_code and that code; `QCLI_NO_SPEC_CACHE=1` bypasses it.
    """
    path = None
    if not os.environ.get("QCLI_NO_SPEC_CACHE"):
        path = _spec_cache_path(cfg, trust_remote_code, cache_dir or cache_root(), code_dir)
    if path is not None and path.is_file():
        try:
            return spec_from_json(json.loads(path.read_text()))
        except (ValueError, TypeError, KeyError):
            pass  # an entry from another qcli: rebuild it
    spec = _build(cfg, trust_remote_code, code_dir)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(spec_to_json(spec)))
        tmp.replace(path)
    return spec


def _unknown_type(cfg: dict[str, Any]) -> UnknownModelType:
    version = transformers_version()
    mt = cfg.get("model_type")
    if cfg.get("auto_map"):
        return UnknownModelType(
            f"config.json: model_type {mt!r} is not part of transformers {version}; the repository ships its own code",
            "pass --trust-remote-code if you trust that code",
        )
    return UnknownModelType(
        f"config.json: transformers {version} does not know model_type {mt!r}",
        "upgrade transformers, or check the config's model_type",
    )


@contextlib.contextmanager
def _config_dir(cfg: dict[str, Any], remote: bool, code_dir: Path | None) -> Iterator[Path]:
    """Yield a temporary directory holding the config dict as config.json and, for remote code, the repository's
    *.py files (auto_map names them).

    The dict is read by transformers' own loader (`AutoConfig.from_pretrained` on this directory), exactly as
    a checkpoint's config.json would be: transformers 5 writes infinities as `{"__float__": "Infinity"}` and
    only its loader decodes them; it also applies each config class's own defaults and legacy keys.
    """
    with tempfile.TemporaryDirectory(prefix="qcli-config-") as tmp:
        folder = Path(tmp)
        if remote and code_dir is not None:
            # transformers caches a local repo's code under HF_MODULES_CACHE by the folder's name and the code's
            # hash: the model directory's own name reuses the entry the load makes, not a new one per run.
            folder = folder / (code_dir.resolve().name or "model")
            folder.mkdir()
            for path in code_files(code_dir):
                shutil.copyfile(path, folder / path.name)
        (folder / "config.json").write_text(json.dumps(cfg))
        yield folder


@contextlib.contextmanager
def _code_errors(tmp: Path) -> Iterator[None]:
    """Turn transformers' errors about a config or a repository's code into one-line UsageErrors."""
    try:
        yield
    except (KeyError, ValueError, TypeError, AttributeError, *_strict_errors()) as exc:
        # huggingface_hub's strict dataclasses put the cause on the next line: keep both, bounded
        reason = " ".join(str(exc).replace(str(tmp), ".").split()) or type(exc).__name__
        reason = reason if len(reason) <= 240 else reason[:239] + "…"
        raise UsageError(f"config.json: transformers cannot read it: {reason}") from exc
    except OSError as exc:  # a file auto_map names is not there (a hub repo's code is not fetched here)
        raise UsageError(f"config.json: {_missing_code(exc, tmp)}", "is the repository's code complete?") from exc
    except ImportError as exc:  # the repository's code needs a package that is not installed
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"config.json: the repository's code cannot be imported: {first}") from exc


def _missing_code(exc: OSError, tmp: Path) -> str:
    """Return transformers' OSError about a repository's code as one line without the temporary directory."""
    found = re.search(r"named (\S+?)\.? ", str(exc) + " ")
    if found:
        return f"auto_map names {found.group(1)}, which is not beside config.json"
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"the repository's code cannot be read: {first.replace(str(tmp), '.')}"


def _remote(cfg: dict[str, Any], trust_remote_code: bool) -> bool:
    """Return whether the config's own code (auto_map) runs; an unknown model_type without it is refused."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    remote = trust_remote_code and bool(cfg.get("auto_map"))
    if cfg.get("model_type") not in CONFIG_MAPPING and not remote:
        raise _unknown_type(cfg)
    return remote


def _strict_errors() -> tuple[type[Exception], ...]:
    """Return huggingface_hub's strict-dataclass validation error (transformers 5's config classes raise it
    for a value of the wrong type or a failed class check, such as layer_types); none on older versions."""
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # pragma: no cover - huggingface_hub before strict dataclasses
        return ()
    return (StrictDataclassError,)


def model_class(config: Any, remote: bool = False) -> tuple[type, str]:
    """Return the class `qcli load` builds (AutoModelForCausalLM) and which auto class found it.

    With `remote`, a class the config's auto_map names comes first, as in from_pretrained; it is read from
    the directory the config was loaded from (config.name_or_path), which must still exist.
    """
    from transformers import AutoModel, AutoModelForCausalLM
    from transformers.models.auto.auto_factory import _get_model_class

    auto_map = (getattr(config, "auto_map", None) or {}) if remote else {}
    for auto in (AutoModelForCausalLM, AutoModel):
        if isinstance(ref := auto_map.get(auto.__name__), str):
            from transformers.dynamic_module_utils import get_class_from_dynamic_module

            return get_class_from_dynamic_module(ref, config.name_or_path), auto.__name__
    for auto in (AutoModelForCausalLM, AutoModel):
        if type(config) in auto._model_mapping:
            return _get_model_class(config, auto._model_mapping), auto.__name__
    raise UsageError(f"transformers has no model class for model_type {config.model_type!r}")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence transformers' logging and Python warnings (kernel fallbacks, standalone-head hints)."""
    import warnings

    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.set_verbosity(level)


def _instantiate(cls: type, config: Any, dtype: Any) -> Any:
    """Return the model on the meta device, built as from_pretrained builds it, weights not yet tied."""
    import torch
    from transformers.utils.generic import ContextManagers

    try:
        contexts = cls.get_init_context(dtype, True, False, None)  # transformers 5's from_pretrained contexts
    except (AttributeError, TypeError):  # another transformers: the meta device alone
        contexts = [torch.device("meta")]
    with ContextManagers(contexts):
        return cls(config)


def _build(cfg: dict[str, Any], trust_remote_code: bool, code_dir: Path | None = None) -> ModelSpec:
    what = f"model_type {cfg.get('model_type')!r} has no analytic description; counting it on the meta device"
    require_load_extra(what, ("torch", "transformers"))
    import torch
    from transformers import AutoConfig

    remote = _remote(cfg, trust_remote_code)
    with _config_dir(cfg, remote, code_dir) as tmp, _code_errors(tmp):
        with _quiet():  # the config classes log their complaints (special token ids outside the vocabulary)
            config = AutoConfig.from_pretrained(tmp, trust_remote_code=trust_remote_code)
        cls, auto = model_class(config, remote)
    dtype = getattr(torch, PROBE_DTYPE)
    with _quiet():
        try:
            model = _instantiate(cls, config, dtype)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UsageError(f"config.json: transformers cannot build {cls.__name__} from it: {first}") from exc
        # transformers' bnb quantizer computes its skip list here, before the weights are tied
        skips = _keys_not_to_convert(model)
        model.tie_weights()
        spec = spec_from_module(model, config, source="meta")
        spec.model_class = cls.__name__
        spec.default_skips = tuple(sorted(skips))
        if auto != "AutoModelForCausalLM":
            spec.notes.append(f"transformers has no causal-LM class for {spec.model_type}: counted as {cls.__name__}")
        try:
            spec.cache = probe_cache(model, dtype)
        except Exception as exc:  # a forward the meta device cannot run: the config's attention shape instead
            if _keeps_no_cache(model):
                spec.cache = []
            else:
                spec.notes.append(f"cache sized from the config: the meta forward failed ({type(exc).__name__})")
    return spec


def _keeps_no_cache(model: Any) -> bool:
    """Return whether the model cannot keep a generation cache, judged without running it.

    Its forward takes no `use_cache` (XLM), or its config class declares `is_decoder` and the model is
    not one: encoder families' *ForCausalLM heads (BERT, RoFormer, BigBird, ...) cache only as decoders,
    while decoder-only families do not declare the field.
    """
    import inspect

    if "use_cache" not in inspect.signature(model.forward).parameters:
        return True
    declared = "is_decoder" in getattr(type(model.config), "__dataclass_fields__", {})
    return declared and not getattr(model.config, "is_decoder", False)


def _keys_not_to_convert(model: Any) -> set[str]:
    """Return the modules transformers' bnb quantizer keeps unquantized by default (before tying).

    Mirrors transformers 5 `quantizers.base.get_keys_to_not_convert`: tied weights (both ends), the
    module of the last parameter (only a trailing `.weight` is stripped, so a last `.bias` keeps
    nothing), the output embeddings; plus `_keep_in_fp32_modules`, which get_modules_to_not_convert adds.
    """
    try:
        from transformers.quantizers.base import get_keys_to_not_convert

        keys = set(get_keys_to_not_convert(model))
    except ImportError:  # pragma: no cover - older transformers
        tied = getattr(model, "all_tied_weights_keys", {}) or {}
        keys = set(tied) | set(tied.values()) | {list(model.named_parameters())[-1][0]}
        out = model.get_output_embeddings()
        keys |= {n for n, m in model.named_modules() if out is not None and m is out}
        keys = {k.removesuffix(".weight") for k in keys}
    return keys | set(getattr(model, "_keep_in_fp32_modules", None) or ())


def spec_from_module(model: Any, config: Any, source: Literal["analytic", "meta"] = "meta") -> ModelSpec:
    """Return the ModelSpec of an instantiated (meta or real) torch model, tied weights once."""
    from torch import nn

    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover
        Conv1D = ()

    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tensors: list[TensorSpec] = []
    seen: set[int] = set()
    # named_modules() lists a module shared by several layers once, under its first name: the name
    # transformers' replace_with_bnb_linear sees too.
    for mod_name, module in model.named_modules():
        for p_name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            shape = tuple(param.shape)
            out_features = None
            convertible = type(module) is nn.Linear or isinstance(module, Conv1D)
            if module is out_emb and out_emb is not None and p_name == "weight":
                role: Role = "lm_head"
            elif isinstance(module, nn.Embedding):
                role = "embedding"
            elif convertible and p_name == "weight":
                # transformers' bnb integration converts exact nn.Linear and Conv1D only.
                role = "linear"
                if isinstance(module, Conv1D):
                    out_features = shape[1]
            elif isinstance(module, nn.Linear) and p_name == "weight":
                role = "linear_subclass"
            elif p_name == "bias":
                role = "bias"
            elif param.dim() == 3 and "expert" in name.lower():
                role = "experts"
            elif "router" in type(module).__name__.lower():
                role = "router"
            elif "norm" in type(module).__name__.lower() or "norm" in name.lower():
                role = "norm"
            else:
                role = "other"
            tensors.append(TensorSpec(name, shape, role, out_features=out_features, convertible=convertible))
    # A buffer built in the model's dtype follows the load dtype (gemma's embed_scale); one in another
    # dtype keeps it (rotary inv_freq stays float32, position ids int64).
    load_dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    for b_name, buf in model.named_buffers():
        dtype = None if buf.dtype == load_dtype else str(buf.dtype).removeprefix("torch.")
        tensors.append(TensorSpec(b_name, tuple(buf.shape), "buffer", dtype=dtype))
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    # The config's attribute_map resolves aliases (jetmoe's kv_channels is its head_dim): read through it.
    names = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim")
    flat = text.to_dict()
    for key in names:
        with contextlib.suppress(Exception):  # heterogeneous configs refuse global reads of per-layer keys
            if (value := getattr(text, key, None)) is not None:
                flat[key] = value
    attention = None
    with contextlib.suppress(UsageError, TypeError, ValueError):
        attention = attention_shape(flat)
    return ModelSpec(
        model_type=str(config.model_type),
        tensors=tensors,
        attention=attention,
        vocab_size=int(getattr(text, "vocab_size", 0) or 0),
        tied_embeddings=bool(
            out_emb is not None
            and any(t.role == "embedding" for t in tensors)
            and not any(t.role == "lm_head" for t in tensors)
        ),
        max_position_embeddings=getattr(text, "max_position_embeddings", None),
        source=source,
        keep_in_fp32=tuple(sorted(getattr(model, "_keep_in_fp32_modules", None) or ())),
        keep_in_fp32_strict=tuple(sorted(getattr(model, "_keep_in_fp32_modules_strict", None) or ())),
        config_dtype=config_dtype({"dtype": str(dtype) if (dtype := getattr(config, "dtype", None)) else None}),
    )
