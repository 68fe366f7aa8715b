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


def check_loaded_weights(model_name: str, model: Any, loading_info: dict[str, Any], prequantized: bool) -> None:
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
    """Raise a UsageError when a checkpoint without a quantization_config stores a `*.weight` tensor as
    integers or booleans: transformers casts it to the load dtype without a word (int32(w × 100) loads as a
    bf16 weight a hundred times too large), and the model generates garbage. Buffers such as GPT-2's boolean
    `attn.bias` masks are not weights and pass; quantized checkpoints store integer weights by design.

    A local directory's headers are read here; a hub repo's were read by `resolve` (Range requests, recorded
    per commit), and hf_quant_config.json is asked for only when such a weight is there."""
    from qcli.model.safetensors_header import checkpoint_files, non_float_weight, read_header

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
        found = non_float_weight({p.name: read_header(p) for p in checkpoint_files(directory) or []})
        if found is None:
            return
    file, tensor, dtype = found
    raise UsageError(
        f"{name}: {file} stores {tensor} as {dtype}, and config.json has no quantization_config: "
        "transformers would cast the integers to floats and load a broken model",
        "save the checkpoint again from a float model, or add the quantization_config it was saved with",
    )


MODELOPT_CONFIG = "hf_quant_config.json"  # NVIDIA ModelOpt's quantization config, beside config.json


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


def check_tokenizer_fits(name: str, tokenizer: Any, config: dict[str, Any]) -> None:
    """Raise a UsageError when the tokenizer gives ids past the model's embeddings (a tokenizer of another
    model): every prompt with such a token would fail inside the forward pass with an IndexError.
    A tokenizer smaller than the embeddings is normal (vocabularies are padded)."""
    vocab = _vocab_size(config)
    try:
        size = len(tokenizer)
    except TypeError:
        return
    if vocab is not None and size > vocab:
        raise UsageError(
            f"{name}: the tokenizer has {size:,} tokens and the model's embeddings only {vocab:,} (vocab_size in "
            "config.json): the tokenizer is another model's",
            "copy the tokenizer files of the model the weights came from into the directory",
        )


# How torch.load says a file is not a checkpoint it can read (a pickle, a zip archive, or neither).
_UNREADABLE_PICKLE = ("UnpicklingError", "PytorchStreamReader", "invalid load key", "Ran out of input", "weights_only")


def unreadable_weights(exc: BaseException, name: str, directory: Path | None) -> UsageError | None:
    """Return the UsageError for a PyTorch weight file torch.load refused (garbage, truncated, not a checkpoint);
    None for any other failure. torch's own advice to retry with weights_only=False, which runs whatever
    the file holds, is never passed on."""
    text = f"{type(exc).__name__}: {exc}"
    if not (isinstance(exc, EOFError) or any(marker in text for marker in _UNREADABLE_PICKLE)):  # EOF: an empty file
        return None
    bins = sorted(p.name for p in directory.glob("*.bin")) if directory is not None else []
    what = bins[0] if len(bins) == 1 else "its PyTorch .bin weight files"
    found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(exc))
    cause = found.group(1).strip() if found else ("" if "weights_only" in str(exc) else str(exc).strip())
    cause = (cause.splitlines() or [""])[0][:120]
    return UsageError(
        f"{name}: {what} is not a readable PyTorch checkpoint (torch.load refused it{': ' + cause if cause else ''})",
        "download the weights again, or save the model as model.safetensors",
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
