"""Whether a checkpoint is what its config.json says: the files it names, checked before the load, and the
weights that loaded, read back after it.

After the load, three sources, each the library's own word: transformers' loading report (`output_loading_info=True`:
weights missing from the checkpoint, weights the model has no place for, weights of another shape); the
bitsandbytes modules themselves, because transformers skips its shape check for a weight it quantizes
(`core_model_loading`: "Shape errors result in mismatched key, except for quantized params"), so a
quantized module's stored shape is compared with its in/out features here; and, for a checkpoint whose
config.json says it is stored quantized, whether its modules really hold quantized weights.

Keys transformers leaves missing on purpose (a tied lm_head, non-persistent buffers such as rotary
`inv_freq`, a model's `_keys_to_ignore_on_load_missing`) are already out of its report.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qcli.errors import UsageError, debug_enabled

if TYPE_CHECKING:
    from qcli.model.resolve import ModelSource

NAMED = 3  # tensor names shown per kind of problem
QUANTIZED_LAYERS = ("Linear4bit", "Linear8bitLt")


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Keep transformers' warnings off stderr while it reads a config or tokenizer before the load (the load's
    own progress_line does the same for the load); --debug (QCLI_DEBUG) keeps them."""
    logger = logging.getLogger("transformers")
    level = logger.level
    if not debug_enabled():
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _natural(name: str) -> list[Any]:
    """Sort key that puts layers.2 before layers.10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _shape(shape: Any) -> str:
    return "×".join(str(int(d)) for d in shape) or "scalar"


@dataclass
class WeightReport:
    """What did not load as the config describes it (names as transformers gives them)."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # name, stored, config

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        """Return the problems as one clause per kind, each with its count and the first few names."""

        def names(items: list[str]) -> str:
            more = ", …" if len(items) > NAMED else ""
            return ", ".join(items[:NAMED]) + more

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} weight(s) missing ({names(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected weight(s) ({names(self.unexpected)})")
        if self.mismatched:
            shown = [f"{n} {_shape(s)} stored, {_shape(c)} in the config" for n, s, c in self.mismatched]
            parts.append(f"{len(self.mismatched)} weight(s) of another shape ({names(shown)})")
        return ", ".join(parts)


def _stored_shape(module: Any) -> tuple[int, ...] | None:
    """Return the shape a bitsandbytes module's weight was loaded with (None: not on a real device)."""
    weight = module.weight
    if weight.device.type == "meta":  # offloaded by accelerate: nothing was read into it here
        return None
    state = getattr(weight, "quant_state", None)
    if state is not None:  # Params4bit is packed into a column of bytes; quant_state keeps the shape
        return tuple(int(d) for d in state.shape)
    return tuple(int(d) for d in weight.shape)


def weight_report(loading_info: dict[str, Any], model: Any) -> WeightReport:
    """Return transformers' loading report plus the quantized modules whose stored shape is not the config's."""
    report = WeightReport(
        missing=sorted(loading_info.get("missing_keys") or (), key=_natural),
        unexpected=sorted(loading_info.get("unexpected_keys") or (), key=_natural),
    )
    mismatched = {
        name: (tuple(int(d) for d in stored), tuple(int(d) for d in wanted))
        for name, stored, wanted in loading_info.get("mismatched_keys") or ()
    }
    for name, module in model.named_modules():
        if type(module).__name__ not in QUANTIZED_LAYERS:
            continue
        stored = _stored_shape(module)
        wanted = (int(module.out_features), int(module.in_features))
        if stored is not None and stored != wanted:
            mismatched.setdefault(f"{name}.weight", (stored, wanted))
    report.mismatched = [(n, *mismatched[n]) for n in sorted(mismatched, key=_natural)]
    return report


def unquantized_modules(model: Any) -> list[tuple[str, str]]:
    """Return (module name, weight dtype) of bitsandbytes modules on a real device that hold no quantized weight."""
    out = []
    for name, module in model.named_modules():
        kind = type(module).__name__
        if kind not in QUANTIZED_LAYERS or module.weight.device.type == "meta":
            continue
        weight = module.weight
        quantized = (
            getattr(weight, "quant_state", None) is not None
            if kind == "Linear4bit"
            else str(weight.dtype) == "torch.int8"
        )
        if not quantized:
            out.append((name, str(weight.dtype).removeprefix("torch.")))
    return out


def untied_output_embeddings(model: Any) -> str | None:
    """Return the output embedding's module name when config.json ties it to the input embeddings and the loaded
    model holds them apart: transformers does NOT tie them when the checkpoint stores both with different values
    (it warns, and the model is then untied, with an lm_head the estimate of a tied model does not count)."""
    config = model.config
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    if not getattr(text, "tie_word_embeddings", getattr(config, "tie_word_embeddings", False)):
        return None
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    a, b = getattr(inp, "weight", None), getattr(out, "weight", None)
    if a is None or b is None or a is b or type(out).__name__ in QUANTIZED_LAYERS:
        return None
    if "meta" in (a.device.type, b.device.type) or a.data_ptr() == b.data_ptr():
        return None  # offloaded by accelerate (nothing read here), or the same storage
    return next((name for name, module in model.named_modules() if module is out), "lm_head")


def _quant_tensors(name: str, param: Any) -> list[tuple[str, Any]]:
    """Return (name, tensor) of the float tensors a parameter's values live in: itself when it is a float, and a
    bitsandbytes weight's quantization state (4-bit absmax, nested absmax, offset; 8-bit row scales SCB), where a
    NaN or inf of the checkpoint ends up (the packed integers cannot hold one)."""
    state, prefix = getattr(param, "quant_state", None), ""
    # a 4-bit weight's own data is packed nibbles whatever its storage dtype (bnb_4bit_quant_storage float32 or
    # bfloat16 packs them into floats, some of whose bit patterns read as NaN): only its quant_state holds values
    out = [(name, param)] if param.is_floating_point() and state is None else []
    while state is not None:
        for part in ("absmax", "offset", "code"):
            value = getattr(state, part, None)
            if value is not None and hasattr(value, "is_floating_point") and value.is_floating_point():
                out.append((f"{name} ({prefix}{part})", value))
        state, prefix = getattr(state, "state2", None), "nested "  # double quantization: absmax quantized in turn
    scb = getattr(param, "SCB", None)
    if scb is not None and hasattr(scb, "is_floating_point") and scb.is_floating_point():
        out.append((f"{name} (SCB)", scb))
    return out


SCAN_CHUNK = 1 << 24  # elements per isfinite pass: a 16 MiB mask, not one the size of a 500M-element embedding


def _non_finite_count(tensor: Any) -> int:
    """Return how many of a tensor's values are NaN or inf, read in chunks so that the check needs little
    memory beside the model (it may just fit the GPU)."""
    import torch

    flat = tensor.detach().reshape(-1)
    return sum(int((~torch.isfinite(flat[i : i + SCAN_CHUNK])).sum()) for i in range(0, flat.numel(), SCAN_CHUNK))


def non_finite_weights(model: Any) -> list[tuple[str, str, int]]:
    """Return (parameter, where in it, count) of the loaded parameters holding NaN or inf values; parameters on
    the meta device (offloaded by accelerate) are not read. Buffers are not weights (some hold -inf masks)."""

    out = []
    for name, param in model.named_parameters():
        if param.device.type == "meta":
            continue
        for where, tensor in _quant_tensors(name, param):
            bad = _non_finite_count(tensor)
            if bad:
                out.append((name, where, bad))
                break
    return out


def _stored_values(directory: Path | None, tensor: str) -> tuple[str, Any] | None:
    """Return (file, tensor) of a weight as a local safetensors checkpoint stores it; None when not found there."""
    if directory is None:
        return None
    from safetensors import safe_open

    from qcli.model.safetensors_header import checkpoint_files

    for path in checkpoint_files(directory) or []:
        try:
            with safe_open(str(path), framework="pt") as f:
                if tensor in f.keys():  # noqa: SIM118 (safe_open is no mapping)
                    return path.name, f.get_tensor(tensor)
        except Exception:  # the load read it a moment ago; not worth a second error
            return None
    return None


def non_finite_error(model_name: str, model: Any, directory: Path | None, dtype: str) -> UsageError | None:
    """Return the UsageError for loaded weights holding NaN or inf (None when all are finite): every forward
    pass through them gives NaN, so the model cannot be what the checkpoint claims. The checkpoint's own copy
    of the first one (a local safetensors file) tells whether it stores them so (damaged) or its values are past
    the load dtype's range (1e30 loaded as float16 is inf: the preset cannot apply)."""
    bad = non_finite_weights(model)
    if not bad:
        return None
    import torch

    name, where, count = bad[0]
    more = f" (and {len(bad) - 1} more weight(s))" if len(bad) > 1 else ""
    stored = _stored_values(directory, name)
    if stored is not None and stored[1].is_floating_point() and bool(torch.isfinite(stored[1]).all()):
        file, values = stored
        peak = float(values.abs().max())
        limit = torch.finfo(getattr(torch, dtype)).max if hasattr(torch, dtype) else None
        if limit is not None and peak > limit:
            return UsageError(
                f"{model_name}: {file} stores {name} with values up to {peak:.3g}, past {dtype}'s range "
                f"(±{limit:.5g}): loaded as {dtype}, they became inf{more}",
                "load with a bfloat16 or float32 preset (e.g. --preset bf16, or --dtype bfloat16)",
            )
    if stored is not None and stored[1].is_floating_point() and not bool(torch.isfinite(stored[1]).all()):
        file, stored_bad = stored[0], int((~torch.isfinite(stored[1])).sum())
        return UsageError(
            f"{model_name}: {file} stores {name} with {stored_bad:,} NaN or inf value(s){more}: the checkpoint "
            "is damaged and every forward pass would give NaN",
            "download or save the checkpoint again",
        )
    return UsageError(
        f"{model_name}: the loaded {where} holds {count:,} NaN or inf value(s){more}: the checkpoint is damaged, "
        f"or its values are past the range of the load dtype ({dtype})",
        "download the checkpoint again; if it loads in float32 (--preset fp32), use a bfloat16 or float32 preset",
    )


def check_loaded_weights(
    model_name: str,
    model: Any,
    loading_info: dict[str, Any],
    prequantized: bool,
) -> None:
    """Raise a UsageError (exit 2) when the loaded weights are not the checkpoint its config describes."""
    report = weight_report(loading_info, model)
    if report:
        raise UsageError(
            f"{model_name}: the checkpoint does not match its config: {report.describe()}",
            "the weights were saved for another config (layers, sizes or model_type): use the config.json they "
            "were saved with, or download the checkpoint again",
        )
    if (head := untied_output_embeddings(model)) is not None:
        raise UsageError(
            f"{model_name}: the checkpoint does not match its config: config.json ties the embeddings "
            f"(tie_word_embeddings: true), and the checkpoint stores {head}.weight with other values than the input "
            "embeddings, so transformers loaded them untied",
            'set "tie_word_embeddings": false in config.json if the weights are untied, or download the checkpoint '
            "again",
        )
    if prequantized and (plain := unquantized_modules(model)):
        name, dtype = plain[0]
        raise UsageError(
            f"{model_name}: config.json has a bitsandbytes quantization_config, but the weights are not stored "
            f"quantized ({len(plain)} module(s) hold plain weights, e.g. {name}: {dtype})",
            "remove quantization_config from config.json and quantize at load time with a preset "
            "(e.g. --preset nf4), or download the quantized checkpoint again",
        )


def check_remote_code(directory: Path | None, config: dict[str, Any], trust_remote_code: bool) -> None:
    """Raise a UsageError when --trust-remote-code is given and a local model lacks a file its auto_map names.

    auto_map values are `module.Class` (a module.py beside config.json), `other/repo--module.Class` (code
    from another repo, fetched by transformers) or, for tokenizers, lists of those; only the first kind is a file
    this directory must have.
    """
    auto_map = config.get("auto_map")
    if not trust_remote_code or directory is None or not isinstance(auto_map, dict):
        return
    refs = [r for v in auto_map.values() for r in (v if isinstance(v, list) else [v]) if isinstance(r, str)]
    for ref in refs:
        if "--" in ref or "." not in ref:
            continue
        module = ref.rsplit(".", 1)[0]
        if not (directory / f"{module.replace('.', '/')}.py").is_file():
            raise UsageError(
                f"{directory}: config.json's auto_map names {ref}, and {module}.py is not in the directory",
                "copy the repository's code files beside config.json, or download the model again",
            )


def check_causal_lm(name: str, config: dict[str, Any], trust_remote_code: bool) -> None:
    """Raise a UsageError when config.json names no architecture, or one with no causal-LM class in transformers
    (what load, verify and compare build: AutoModelForCausalLM). Imports transformers."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type.strip():
        raise UsageError(
            f"{name}: config.json has no model_type, so transformers cannot tell which architecture it is",
            'add the model\'s model_type (e.g. "llama") to config.json, or download the model again',
        )
    auto_map = config.get("auto_map")
    if trust_remote_code and isinstance(auto_map, dict) and "AutoModelForCausalLM" in auto_map:
        return  # the repository's own causal-LM class
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if model_type in CONFIG_MAPPING_NAMES and model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise UsageError(
            f"{name}: model_type {model_type!r} is not a causal language model (transformers has no "
            "AutoModelForCausalLM class for it)",
            "load, verify and compare run text-generation (causal LM) models; `qcli estimate` still sizes this one",
        )


def _vocab_size(config: dict[str, Any]) -> int | None:
    """Return the rows of the model's input embeddings as config.json gives them (a text_config's for a
    multimodal model); None when it does not say."""
    for cfg in (config, config.get("text_config")):
        value = cfg.get("vocab_size") if isinstance(cfg, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_token_ids(name: str, config: dict[str, Any]) -> None:
    """Raise a UsageError when config.json's pad_token_id is outside the vocabulary: transformers builds the
    embeddings with it as `padding_idx`, and torch refuses one past the table (an AssertionError mid-load).
    transformers itself only warns about other token ids out of range, and generation still runs with them."""
    vocab = _vocab_size(config)
    for cfg in (config, config.get("text_config")):
        pad = cfg.get("pad_token_id") if isinstance(cfg, dict) else None
        if vocab is None or not isinstance(pad, int) or isinstance(pad, bool):
            continue
        if not -vocab <= pad < vocab:  # torch.nn.Embedding accepts -vocab ≤ padding_idx < vocab
            raise UsageError(
                f"{name}: config.json's pad_token_id {pad} is outside the vocabulary (vocab_size {vocab}: ids 0 to "
                f"{vocab - 1})",
                "set pad_token_id to the id of the pad token in the tokenizer, or to null",
            )


def check_weight_dtypes(name: str, source: ModelSource, token: str | None = None) -> None:
    """Raise a UsageError when a local model's PyTorch .bin weights are no dictionary of tensors
    (check_bin_weights), or when a checkpoint without a quantization_config stores a `*.weight` tensor as
    integers or booleans: transformers casts it to the load dtype without a word (int32(w × 100) loads as a
    bf16 weight a hundred times too large), and the model generates garbage. Buffers such as GPT-2's boolean
    `attn.bias` masks are not weights and pass; quantized checkpoints store integer weights by design.

    A local directory's headers are read here; a hub repo's were read by `resolve` (Range requests, recorded
    per commit), and hf_quant_config.json is asked for only when such a weight is there."""
    from qcli.model.safetensors_header import checkpoint_files, non_float_weight, read_header

    bins = check_bin_weights(name, source.local_dir)  # .bin files that are no state dict: exit 2 whatever the config
    if isinstance(source.config.get("quantization_config"), dict):
        return
    directory = source.local_dir
    if source.repo_id is not None and source.commit_sha is not None:
        found = source.non_float_weight
        if found is None:
            return
        from qcli.model.hub import has_file

        if has_file(source.repo_id, MODELOPT_CONFIG, source.commit_sha, token) is not False:
            return  # NVIDIA ModelOpt keeps its quantization config there (or it cannot be known: not refused)
    elif directory is None or (directory / MODELOPT_CONFIG).is_file():
        return
    else:
        found = non_float_weight({p.name: read_header(p) for p in checkpoint_files(directory) or []} or bins)
        if found is None:
            return
    file, tensor, dtype = found
    raise UsageError(
        f"{name}: {file} stores {tensor} as {dtype}, and config.json has no quantization_config: "
        "transformers would cast the integers to floats and load a broken model",
        "save the checkpoint again from a float model, or add the quantization_config it was saved with",
    )


MODELOPT_CONFIG = "hf_quant_config.json"  # NVIDIA ModelOpt's quantization config, beside config.json

# What bitsandbytes saves beside a 4-bit weight `X.weight` (Params4bit's QuantState.as_dict(packed=True)).
BNB4_PARTS = ("absmax", "quant_map", "nested_absmax", "nested_quant_map")
BNB4_STATE = ".quant_state.bitsandbytes__"  # + nf4 or fp4: the state's JSON, stored as a uint8 tensor
PREQUANT_HINT = "the quantized checkpoint is damaged or incomplete: download or save it again"


def _bnb4_state(path: Path, tensor: str) -> dict[str, Any] | None:
    """Return the JSON a 4-bit weight's quant_state tensor holds; None when it is no JSON object."""
    import json

    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            data = json.loads(bytes(f.get_tensor(tensor).flatten().tolist()).decode("utf-8"))
    except Exception:
        return None
    return data if isinstance(data, dict) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def check_prequantized_state(name: str, source: ModelSource) -> None:
    """Raise a UsageError when a local bitsandbytes checkpoint's quantization state does not fit its weights:
    a 4-bit weight without its absmax, quant_map or quant_state tensor (or with one of another size than the
    state's shape and block size give), an 8-bit weight without row scales (SCB) for each row. transformers
    fails on a missing part mid-load with "issues during automatic conversion ... look at the above report" and
    loads a part of another size without a word: the forward pass then fails or reads garbage."""
    from math import ceil, prod

    from qcli.model.safetensors_header import DTYPE_BYTES, checkpoint_files, read_header

    q = source.quantization_config
    directory = source.local_dir
    if q is None or q.get("quant_method") != "bitsandbytes" or directory is None:
        return
    files = checkpoint_files(directory) or []
    where: dict[str, Path] = {}
    entries: dict[str, tuple[str, tuple[int, ...], int]] = {}
    for path in files:
        header = read_header(path)
        entries.update(header)
        where.update(dict.fromkeys(header, path))

    def bad(tensor: str, problem: str) -> UsageError:
        if tensor not in where:
            return UsageError(f"{name}: the checkpoint has no {tensor}: {problem}", PREQUANT_HINT)
        return UsageError(f"{name}: {where[tensor].name}: {tensor}: {problem}", PREQUANT_HINT)

    def count(tensor: str) -> int:
        return prod(entries[tensor][1])

    bases = set()
    for tensor in entries:
        for part in (*BNB4_PARTS, BNB4_STATE.strip(".")):
            marker = f".weight.{part}"
            if marker in tensor:
                bases.add(tensor[: tensor.index(marker)] + ".weight")
    for base in sorted(bases, key=_natural):
        states = [t for t in entries if t.startswith(base + BNB4_STATE)]
        for needed in (base, f"{base}.absmax", f"{base}.quant_map"):
            if needed not in entries:
                raise bad(needed, "bitsandbytes cannot rebuild the 4-bit weight without it")
        if len(states) != 1:
            raise bad(
                f"{base}{BNB4_STATE}nf4",
                f"{len(states)} quant_state tensors stored (one needed), so the 4-bit weight cannot be rebuilt",
            )
        state = _bnb4_state(where[states[0]], states[0])
        shape = state.get("shape") if state else None
        block = _int(state.get("blocksize")) if state else None
        if state is None or not isinstance(shape, list) or not all(_int(d) for d in shape) or block is None:
            raise bad(states[0], "not the JSON of a 4-bit quant_state (with shape and blocksize)")
        n = prod(shape)
        stored = entries[base]
        packed = count(base) * DTYPE_BYTES.get(stored[0], 1)
        if packed != ceil(n / 2):
            raise bad(base, f"{packed:,} bytes stored, a {_shape(shape)} 4-bit weight packs into {ceil(n / 2):,}")
        blocks = ceil(n / block)
        if count(f"{base}.absmax") != blocks:
            raise bad(f"{base}.absmax", f"{count(f'{base}.absmax'):,} values stored, {blocks:,} blocks of {block}")
        if count(f"{base}.quant_map") != 16:
            raise bad(f"{base}.quant_map", f"{count(f'{base}.quant_map'):,} values stored, 16 needed")
        nested = [f"{base}.nested_absmax", f"{base}.nested_quant_map"]
        if any(t in entries for t in nested) or "nested_blocksize" in state:
            for t in nested:
                if t not in entries:
                    raise bad(t, "the weight is double quantized and its absmax cannot be rebuilt without it")
            nblock = _int(state.get("nested_blocksize"))
            if nblock is None:
                raise bad(states[0], "double quantized, but the quant_state has no nested_blocksize")
            if count(nested[0]) != ceil(blocks / nblock):
                raise bad(nested[0], f"{count(nested[0]):,} values stored, {ceil(blocks / nblock):,} needed")
            if count(nested[1]) != 256:
                raise bad(nested[1], f"{count(nested[1]):,} values stored, 256 needed")
    if q.get("load_in_8bit") or q.get("_load_in_8bit"):
        for tensor, (dtype, shape, _) in entries.items():
            if not tensor.endswith(".weight") or dtype != "I8" or len(shape) != 2:
                continue
            scb = tensor.removesuffix("weight") + "SCB"
            if scb not in entries:
                raise bad(scb, f"the int8 weight {tensor} has no row scales without it")
            if count(scb) != shape[0]:
                raise bad(scb, f"{count(scb):,} row scales stored, {tensor} has {shape[0]:,} rows")


BIN_SINGLE, BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"  # transformers' WEIGHTS_(INDEX_)NAME
BIN_HINT = "download the weights again, or save the model as model.safetensors"
_TORCH_DTYPE_TAGS = {  # torch dtype -> safetensors header dtype, for the checks shared with safetensors
    "bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "int32": "I32", "int64": "I64",
    "uint16": "U16", "uint32": "U32", "uint64": "U64",
}  # fmt: skip


def _bin_files(directory: Path) -> list[Path]:
    """Return the PyTorch weight files transformers loads from a directory with no model.safetensors and no
    safetensors index: pytorch_model.bin, else the shards pytorch_model.bin.index.json lists."""
    from qcli.model.safetensors_header import read_index, shard_names

    if (directory / BIN_SINGLE).exists():
        return [directory / BIN_SINGLE]
    index = directory / BIN_INDEX
    if not index.exists():
        return []
    return [directory / n for n in shard_names(index, read_index(index))]


def check_bin_weights(name: str, directory: Path | None) -> dict[str, dict[str, tuple[str, tuple[int, ...], int]]]:
    """Raise a UsageError when the PyTorch .bin files a local model loads from (no safetensors there) are not
    dictionaries of tensors: garbage, a zip archive torch did not write, a pickle of something else, or one
    torch's weights_only unpickler refuses. transformers reads them the same way, but fails with errors that
    name nothing (`KeyError: 101`, `cannot convert dictionary update sequence`). They are read on the meta
    device: the pickle and the tensor names, shapes and dtypes, no data. Return {file: {tensor: (dtype tag,
    shape, 0)}}, the same entries a safetensors header gives, for the checks both formats share."""
    from qcli.model.safetensors_header import checkpoint_files, name_problem

    if directory is None or checkpoint_files(directory) is not None:
        return {}  # safetensors are loaded first: transformers never opens a .bin beside them
    out: dict[str, dict[str, tuple[str, tuple[int, ...], int]]] = {}
    for path in _bin_files(directory):
        where = f"{name}: {path.name}"
        if not path.is_file():
            raise UsageError(f"{where} is missing or not a regular file", BIN_HINT)
        with path.open("rb") as f:
            start = f.read(4)
        if not (start.startswith(b"PK\x03\x04") or start[:1] == b"\x80"):  # torch.save: a zip, or a legacy pickle
            raise UsageError(
                f"{where} is not a readable PyTorch checkpoint (neither a zip archive nor a pickle)", BIN_HINT
            )
        import torch

        try:
            data = torch.load(path, map_location="meta", weights_only=True)
        except Exception as exc:
            raise unreadable_weights(exc, name, directory, path.name, force=True) from None  # type: ignore[misc]
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            what = type(data).__name__ if not isinstance(data, dict) else "dict whose keys are not all strings"
            raise UsageError(f"{where} holds a {what}, not a dictionary of tensors", BIN_HINT)
        entries = {}
        for tensor, value in data.items():
            if not isinstance(value, torch.Tensor):
                raise UsageError(f"{where}: {tensor[:80]!r} is a {type(value).__name__}, not a tensor", BIN_HINT)
            if (problem := name_problem(tensor)) is not None:
                raise UsageError(f"{where}: tensor {tensor[:80]!r}: {problem}", BIN_HINT)
            dtype = str(value.dtype).removeprefix("torch.")
            entries[tensor] = (_TORCH_DTYPE_TAGS.get(dtype, dtype), tuple(value.shape), 0)
        out[path.name] = entries
    return out


GENERATION_CONFIG = "generation_config.json"


def check_generation_config(name: str, directory: Path | None) -> None:
    """Raise a UsageError when a local model's generation_config.json is not one transformers can use: it reads
    the file at load and refuses invalid values (max_new_tokens -5, a list) with errors that do not name the
    file; a file that does not parse it silently ignores, so generation would run with other settings."""
    if directory is None:
        return
    path = directory / GENERATION_CONFIG
    if not path.exists() and not path.is_symlink():
        return
    hint = f"fix {GENERATION_CONFIG} or delete it; transformers then takes the generation defaults from config.json"
    if not path.is_file():
        raise UsageError(f"{name}: {GENERATION_CONFIG} is not a regular file (a directory, FIFO or device)", hint)
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UsageError(f"{name}: {GENERATION_CONFIG} is not UTF-8 text", hint) from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}: {exc.msg}"
        raise UsageError(f"{name}: {GENERATION_CONFIG} is not valid JSON ({where})", hint) from None
    except (OSError, RecursionError):
        raise UsageError(f"{name}: {GENERATION_CONFIG} cannot be read", hint) from None
    if not isinstance(data, dict):
        raise UsageError(f"{name}: {GENERATION_CONFIG} must hold a JSON object, not a {type(data).__name__}", hint)
    from transformers import GenerationConfig

    try:
        with _quiet_transformers():
            GenerationConfig.from_dict(data).validate()
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UsageError(f"{name}: {GENERATION_CONFIG} is not valid: {first}", hint) from None


def _largest_id(tokenizer: Any) -> int | None:
    """Return the largest token id the tokenizer can give (its vocabulary with the added tokens); None when it
    does not say. len(tokenizer) is the count, not the largest id: a vocabulary with a hole in its ids (or a
    token moved to id 5000) is as long as another and gives ids past it."""
    ids = []
    with contextlib.suppress(TypeError):
        ids.append(len(tokenizer) - 1)
    try:
        vocab = tokenizer.get_vocab()
        ids += [v for v in vocab.values() if isinstance(v, int)]
    except Exception:  # a tokenizer without get_vocab (some remote-code ones)
        pass
    return max(ids) if ids else None


def check_tokenizer_fits(name: str, tokenizer: Any, config: dict[str, Any]) -> None:
    """Raise a UsageError when the tokenizer gives ids past the model's embeddings (a tokenizer of another
    model, or a damaged one): every prompt with such a token would fail inside the forward pass with an
    IndexError. A tokenizer smaller than the embeddings is normal (vocabularies are padded)."""
    vocab = _vocab_size(config)
    largest = _largest_id(tokenizer)
    if vocab is None or largest is None or largest < vocab:
        return
    size = len(tokenizer) if hasattr(tokenizer, "__len__") else largest + 1
    if size > vocab:
        raise UsageError(
            f"{name}: the tokenizer has {size:,} tokens and the model's embeddings only {vocab:,} (vocab_size in "
            "config.json): the tokenizer is another model's",
            "copy the tokenizer files of the model the weights came from into the directory",
        )
    token = next((t for t, i in tokenizer.get_vocab().items() if i == largest), "?")
    raise UsageError(
        f"{name}: the tokenizer gives token {token[:40]!r} id {largest:,}, past the model's embeddings (vocab_size "
        f"{vocab:,} in config.json: ids 0 to {vocab - 1:,}); a prompt holding it would fail in the forward pass",
        "copy the tokenizer files of the model the weights came from into the directory",
    )


# How torch.load says a file is not a checkpoint it can read (a pickle, a zip archive, or neither).
_UNREADABLE_PICKLE = ("UnpicklingError", "PytorchStreamReader", "invalid load key", "Ran out of input", "weights_only")


def unreadable_weights(
    exc: BaseException, name: str, directory: Path | None, file: str | None = None, force: bool = False
) -> UsageError | None:
    """Return the UsageError for a PyTorch weight file torch.load refused (garbage, truncated, not a checkpoint);
    None for any other failure (`force`: the exception is torch.load's on `file`, whatever it is). torch's own
    advice to retry with weights_only=False, which runs whatever the file holds, is never passed on."""
    text = f"{type(exc).__name__}: {exc}"
    known = isinstance(exc, EOFError) or any(marker in text for marker in _UNREADABLE_PICKLE)  # EOF: an empty file
    if not (known or force):
        return None
    bins = sorted(p.name for p in directory.glob("*.bin")) if directory is not None else []
    what = file or (bins[0] if len(bins) == 1 else "its PyTorch .bin weight files")
    found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(exc))
    if found:
        cause = found.group(1).strip()
    elif known:
        cause = "" if "weights_only" in str(exc) else str(exc).strip()
    else:  # torch.load's own words on a zip it did not write, a pickle it cannot rebuild
        cause = f"{type(exc).__name__}: {str(exc).strip()}"
    cause = (cause.splitlines() or [""])[0][:120]
    return UsageError(
        f"{name}: {what} is not a readable PyTorch checkpoint (torch.load refused it{': ' + cause if cause else ''})",
        BIN_HINT,
    )


def missing_file(exc: BaseException, name: str) -> UsageError | None:
    """Return the UsageError for a file transformers looked for in a model and did not find; None otherwise."""
    found = re.search(r"does not appear to have a file named ([^\s.][^\s]*?)\.?(?:\s|$)", str(exc))
    if isinstance(exc, OSError) and found:
        return UsageError(
            f"{name}: transformers found no {found.group(1)} in the model", "is the download complete? fetch it again"
        )
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return UsageError(f"{name}: {exc.filename} is missing", "is the download complete? fetch it again")
    return None


# The vocabulary files transformers' tokenizers load from (fast tokenizer, sentencepiece, BPE, WordPiece, tiktoken).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "vocab.txt",
    "tekken.json",
    "tiktoken.model",
)
# The JSON files a tokenizer reads, in the order a decode error is looked for.
TOKENIZER_JSON = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
)
NO_TOKENIZER_HINT = "copy the tokenizer files of the model the weights came from into the directory"


def _check_tokenizer_files(directory: Path, name: str, trust_remote_code: bool) -> None:
    """Raise a UsageError when a local model directory holds no vocabulary file a tokenizer could load."""
    present = [directory / f for f in TOKENIZER_FILES if (directory / f).exists()]
    present += [p for p in directory.glob("*.tiktoken") if p.exists()]
    for path in present:
        if not path.is_file():
            raise UsageError(f"{name}: {path.name} is not a regular file (a directory, FIFO or device)")
    if present or trust_remote_code:  # a repository's own tokenizer may keep its vocabulary elsewhere
        return
    raise UsageError(
        f"{name}: no tokenizer in the directory (none of {', '.join(TOKENIZER_FILES[:5])}, …)", NO_TOKENIZER_HINT
    )


def _bad_json(directory: Path) -> str | None:
    """Return 'file is not valid JSON (…)' for the first tokenizer JSON file that does not parse; None if all do."""
    import json

    for file in TOKENIZER_JSON:
        path = directory / file
        if not path.is_file():
            continue
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            return f"{file} is not UTF-8 text"
        except json.JSONDecodeError as exc:
            return f"{file} is not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
        except (OSError, RecursionError):
            return f"{file} cannot be read"
    return None


def load_tokenizer(
    path: str, name: str, directory: Path | None, revision: str | None, token: str | None, trust_remote_code: bool
) -> Any:
    """Return the model's tokenizer (AutoTokenizer); a missing, damaged or empty one is a UsageError naming the
    file or the cause. `directory` is the local model directory (None for a hub repo)."""
    if directory is not None:
        _check_tokenizer_files(directory, name, trust_remote_code)
    from transformers import AutoTokenizer

    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(
                path, revision=revision, token=token, trust_remote_code=trust_remote_code
            )
    except Exception as exc:
        cause = _bad_json(directory) if directory is not None else None
        if cause is None:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            cause = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        raise UsageError(
            f"{name}: the tokenizer cannot be loaded: {cause}", "download the tokenizer files again"
        ) from exc
    if tokenizer is None or not callable(tokenizer):
        raise UsageError(f"{name}: transformers found no tokenizer for this model", NO_TOKENIZER_HINT)
    return tokenizer
