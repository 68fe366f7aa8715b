"""Presets: YAML files validated by pydantic (extra keys forbidden), resolved by name or path,
overridden with `--set key=value`, converted to a BitsAndBytesConfig (transformers imported lazily).
"""

from __future__ import annotations

import copy
import difflib
import re
import reprlib
import unicodedata
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from qcli.errors import UsageError, too_many_digits
from qcli.paths import user_path
from qcli.plan.formats import DENSE_FORMATS, Format, LoadDtype, normalize_dtype
from qcli.resources import config_file, config_files
from qcli.results.plan import PresetInfo, PresetsReport

StorageDtype = Literal["uint8", "int8", "float16", "bfloat16", "float32"]
# transformers matches each llm_int8_skip_modules entry with re.match against every module name, so a
# pattern such as `(a+)+!` backtracks for hours. Entries are module names (or dotted fragments of them):
# letters, digits, `_`, `-` and `.`, which as a regex matches in linear time.
# Unicode's bidirectional-text controls (embeddings, overrides, isolates, marks): a name holding one reorders
# the text printed after it ("Trojan Source"). Zero-width joiners and other format characters stay allowed
# (emoji sequences).
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_MODULE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,200}")


def _dtype(value: Any) -> Any:
    return normalize_dtype(value) if isinstance(value, str) else value


# BitsAndBytesConfig keys only one mode reads (bitsandbytes' Linear4bit has no outlier threshold or fp16
# weights; Linear8bitLt has no 4-bit quant type, double quantization, compute or storage dtype).
FOUR_BIT_ONLY = ("bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype", "bnb_4bit_quant_storage")
EIGHT_BIT_ONLY = ("llm_int8_threshold", "llm_int8_has_fp16_weight")


class Quantization(BaseModel):
    """The BitsAndBytesConfig fields a preset may set (names as transformers spells them)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)  # built on first use: see qcli.results.Model

    # Strict: YAML's true/false only; "yes", "true" or 1 would pass as true unnoticed.
    load_in_4bit: StrictBool = False
    load_in_8bit: StrictBool = False
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"
    bnb_4bit_use_double_quant: StrictBool = False
    bnb_4bit_compute_dtype: LoadDtype | None = None
    bnb_4bit_quant_storage: StorageDtype = "uint8"
    # Strict and finite: `true` would pass as 1.0, and `.inf` would reach bitsandbytes while --json printed null.
    llm_int8_threshold: StrictFloat = Field(6.0, ge=0, allow_inf_nan=False)
    llm_int8_skip_modules: list[str] | None = None
    llm_int8_enable_fp32_cpu_offload: StrictBool = False
    llm_int8_has_fp16_weight: StrictBool = False

    _norm = field_validator("bnb_4bit_compute_dtype", "bnb_4bit_quant_storage", mode="before")(_dtype)

    @field_validator("llm_int8_skip_modules")
    @classmethod
    def _module_names(cls, names: list[str] | None) -> list[str] | None:
        for name in names or []:
            if not _MODULE_NAME.fullmatch(name):
                raise ValueError(
                    f"{reprlib.repr(name)} is not a module name (letters, digits, _ - . and at most 200 "
                    "characters; regular expressions are refused: transformers runs them on every module name)"
                )
        return names

    @model_validator(mode="after")
    def _one_mode(self, info: ValidationInfo) -> Quantization:
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("load_in_4bit and load_in_8bit cannot both be true; choose one")
        if not (self.load_in_4bit or self.load_in_8bit):
            raise ValueError("set load_in_4bit or load_in_8bit to true (or drop the quantization block)")
        # A preset's keys of the other mode would be dropped without a word (BitsAndBytesConfig keeps them,
        # bitsandbytes never reads them). Checkpoint configs are not held to this: transformers saves every key.
        if (info.context or {}).get("preset"):
            mode, other, kind, alternative = (
                ("load_in_8bit", FOUR_BIT_ONLY, "4-bit", "load_in_4bit")
                if self.load_in_8bit
                else ("load_in_4bit", EIGHT_BIT_ONLY, "int8", "load_in_8bit")
            )
            stray = [k for k in other if k in self.model_fields_set]
            if stray:
                one = len(stray) == 1
                raise ValueError(
                    f"{mode} is true, but {', '.join(stray)} {'applies' if one else 'apply'} to {kind} quantization "
                    f"only and would be ignored; drop {'it' if one else 'them'}, or use {alternative} instead"
                )
        return self

    def format(self) -> Format:
        if self.load_in_8bit:
            return Format("int8", "int8")
        return Format(self.bnb_4bit_quant_type, "4bit", double_quant=self.bnb_4bit_use_double_quant)


class Preset(BaseModel):
    """A named loading recipe: the dtype of unquantized modules and the optional quantization."""

    model_config = ConfigDict(extra="forbid", defer_build=True)  # built on first use: see qcli.results.Model

    name: str = Field(min_length=1)
    description: str = ""
    dtype: LoadDtype
    quantization: Quantization | None = None
    source: str | None = Field(default=None, exclude=True)

    _norm = field_validator("dtype", mode="before")(_dtype)

    @field_validator("name")
    @classmethod
    def _printable_name(cls, name: str) -> str:
        # Reports, JUnit test names and compare's rows carry the name: it must read as one.
        if not name.strip():
            raise ValueError("is blank: give the preset a name")
        if any(unicodedata.category(c) in {"Cc", "Zl", "Zp"} for c in name):
            raise ValueError("holds control characters (a tab, newline or NUL): give a plain name")
        if any(c in BIDI_CONTROLS for c in name):  # would reorder the text around the name in every report
            raise ValueError("holds a bidirectional-text control (U+202E and kin): give a plain name")
        return name

    def weight_format(self, dtype: str | None = None) -> Format:
        """Return the storage format of quantizable linear weights; `dtype` overrides the preset's
        dtype (`--dtype`), which for an unquantized preset is the linears' format too."""
        if self.quantization is not None:
            return self.quantization.format()
        return DENSE_FORMATS[dtype or self.dtype]

    @property
    def compute_dtype(self) -> str:
        q = self.quantization
        if q is not None and q.load_in_4bit:
            return q.bnb_4bit_compute_dtype or "float32"
        return self.dtype

    @property
    def skip_modules(self) -> list[str] | None:
        return self.quantization.llm_int8_skip_modules if self.quantization else None

    def bnb_kwargs(self) -> dict[str, Any] | None:
        """Return the BitsAndBytesConfig keyword arguments (dtype names as strings)."""
        if self.quantization is None:
            return None
        q = self.quantization
        kw: dict[str, Any] = {"load_in_4bit": q.load_in_4bit, "load_in_8bit": q.load_in_8bit}
        if q.load_in_4bit:
            kw |= {
                "bnb_4bit_quant_type": q.bnb_4bit_quant_type,
                "bnb_4bit_use_double_quant": q.bnb_4bit_use_double_quant,
                "bnb_4bit_compute_dtype": q.bnb_4bit_compute_dtype or "float32",
                "bnb_4bit_quant_storage": q.bnb_4bit_quant_storage,
            }
        else:
            kw |= {"llm_int8_threshold": q.llm_int8_threshold, "llm_int8_has_fp16_weight": q.llm_int8_has_fp16_weight}
        kw["llm_int8_enable_fp32_cpu_offload"] = q.llm_int8_enable_fp32_cpu_offload
        if q.llm_int8_skip_modules is not None:
            kw["llm_int8_skip_modules"] = list(q.llm_int8_skip_modules)
        return kw

    def to_bnb_config(self) -> Any:
        """Return a transformers BitsAndBytesConfig, or None for an unquantized preset."""
        kw = self.bnb_kwargs()
        if kw is None:
            return None
        import torch
        from transformers import BitsAndBytesConfig

        for key in ("bnb_4bit_compute_dtype", "bnb_4bit_quant_storage"):
            if key in kw:
                kw[key] = getattr(torch, kw[key])
        return BitsAndBytesConfig(**kw)


def builtin_names() -> list[str]:
    """Return the names of the presets shipped in configs/."""
    return [f.name.removesuffix(".yaml") for f in config_files() if f.name != "gpus.yaml"]


def _as_path(name_or_path: str) -> Path | None:
    """Return the path a preset argument names, or None when it is a built-in preset's name.

    A path when it looks like one or is a file: a directory named `bf16` in the cwd does not hide the preset.
    """
    path = user_path(name_or_path, "preset file")
    return path if path.suffix.lower() in {".yaml", ".yml"} or "/" in name_or_path or path.is_file() else None


def _builtin(name: str) -> str | None:
    """Return the built-in preset a name means, or None; preset names are case-insensitive (QLoRA is qlora)."""
    return {n.lower(): n for n in builtin_names()}.get(name.strip().lower())


def preset_key(name_or_path: str) -> str:
    """Return what a preset argument refers to, so that two spellings of one preset compare equal: the
    resolved path of its file (a built-in's packaged file for a name, in any case)."""
    path = _as_path(name_or_path)
    if path is None:
        name = _builtin(name_or_path)
        if name is None:
            return name_or_path
        path = Path(str(config_file(f"{name}.yaml")))
    try:
        return str(path.resolve())
    except OSError:
        return str(path.absolute())


def preset_file(name_or_path: str | None) -> str | None:
    """Return the YAML file a preset argument names, or None for a built-in name (or no preset)."""
    path = _as_path(name_or_path) if name_or_path else None
    return str(path) if path is not None else None


def _read(name_or_path: str) -> tuple[str, str]:
    """Return (source label, YAML text) for a preset name or a path to a YAML file."""
    path = _as_path(name_or_path)
    if path is not None:
        if path.exists() and not path.is_file():
            raise UsageError(f"preset file {name_or_path!r} is not a regular file", "give a YAML file")
        if not path.is_file():
            raise UsageError(f"preset file {name_or_path!r} does not exist", "give a YAML file or a built-in name")
        try:
            return str(path), path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"preset file {name_or_path!r} is not UTF-8 text", "save it as UTF-8 YAML") from None
        except OSError as exc:
            raise UsageError(f"preset file {name_or_path!r} cannot be read: {exc.strerror or exc}") from exc
    name = _builtin(name_or_path)
    if name is None:
        names = {n.lower(): n for n in builtin_names()}
        close = difflib.get_close_matches(name_or_path.strip().lower(), list(names), n=2, cutoff=0.6)
        maybe = f"did you mean {' or '.join(names[c] for c in close)}? " if close else ""
        raise UsageError(
            f"unknown preset {name_or_path!r}",
            f"{maybe}built-in presets: {', '.join(builtin_names())}; or give a path to a YAML file",
        )
    return f"configs/{name}.yaml", config_file(f"{name}.yaml").read_text(encoding="utf-8")


def _apply_set(data: dict[str, Any], assignment: str, source: str) -> None:
    import yaml  # lazily: `qcli estimate --params` reads no YAML (docs/bench.md)

    from qcli.plan.safe_yaml import load_yaml

    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(
            f"--set {reprlib.repr(assignment)} is not key=value",
            "e.g. --set quantization.bnb_4bit_compute_dtype=float16",
        )
    try:
        value = load_yaml(raw, f"--set {reprlib.repr(key)}") if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "syntax error"
        raise UsageError(f"--set {reprlib.repr(key)}: the value is not valid YAML ({problem})") from None
    except ValueError:  # PyYAML builds ints with int(): Python refuses more than 4300 digits
        raise UsageError(f"--set {reprlib.repr(key)}: {too_many_digits()}") from None
    node = data
    parts = key.split(".")
    if not all(p.strip() for p in parts):
        raise UsageError(
            f"--set {reprlib.repr(assignment)}: the key has an empty part",
            "write dotted keys such as quantization.bnb_4bit_compute_dtype",
        )
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UsageError(f"--set {key}: {part!r} in {source} is not a mapping")
        node = child
    node[parts[-1]] = value


def format_validation_error(source: str, exc: ValidationError) -> str:
    """Return pydantic errors as one line: 'file: field: problem (allowed values)'."""
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "bool_type":
            msg = f"got {reprlib.repr(err.get('input'))}; use true or false"
        elif err["type"] == "literal_error":
            # reprlib: a bounded repr (an alias-expanded value must not be printed in full)
            msg = f"got {reprlib.repr(err.get('input'))}; {msg.lower()}"
        problems.append(f"{loc}: {msg}")
    return f"{source}: " + "; ".join(problems)


def load_preset(name_or_path: str, overrides: list[str] | None = None) -> Preset:
    """Return the validated Preset named (built-in) or found at a path, with --set overrides applied."""
    import yaml  # lazily: `qcli estimate --params` reads no YAML (docs/bench.md)

    from qcli.plan.safe_yaml import load_yaml

    source, text = _read(name_or_path)
    try:
        data = load_yaml(text, source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{source}: YAML syntax error{where}: {getattr(exc, 'problem', exc)}") from exc
    except ValueError:  # PyYAML builds ints with int(): Python refuses more than 4300 digits
        raise UsageError(f"{source}: {too_many_digits()}") from None
    if data is None:
        raise UsageError(f"{source}: the file is empty", "a preset needs at least name and dtype")
    if not isinstance(data, dict):
        raise UsageError(f"{source}: the top level must be a mapping of keys (name, dtype, quantization)")
    before = copy.deepcopy(data)
    keys = [a.partition("=")[0].strip() for a in overrides or []]
    twice = next((k for i, k in enumerate(keys) if k and k in keys[:i]), None)
    if twice is not None:  # the last would win without a word
        raise UsageError(f"--set {reprlib.repr(twice)} is given twice", "give each key once")
    for assignment in overrides or []:
        _apply_set(data, assignment, source)
    if "source" in data:  # the field qcli fills with where the preset came from, from the file or a --set
        raise UsageError(f"{source}: source: unknown key", "drop it: qcli records where a preset came from itself")
    if data != before and data.get("name") == before.get("name") and isinstance(data.get("name"), str):
        data["name"] = f"{data['name']} (--set)"  # no longer the preset its name promises: reports say so
    if overrides:
        # What the errors and reports name: the file and the overrides (a value may come from either).
        shown = ", ".join(o if o.isprintable() else o.encode("unicode_escape").decode("ascii") for o in overrides)
        source = f"{source} with --set {shown}"  # escaped where a value holds what would garble the line
    try:
        preset = Preset.model_validate(data, context={"preset": True})
    except ValidationError as exc:
        raise UsageError(format_validation_error(source, exc)) from None
    preset.source = source
    return preset


def preset_info(preset: Preset) -> PresetInfo:
    """Return the preset as transformers receives it (the `qcli presets --json` record)."""
    return PresetInfo(
        name=preset.name,
        source=preset.source,
        description=preset.description,
        dtype=preset.dtype,
        format=preset.weight_format().key,
        bitsandbytes_config=preset.bnb_kwargs(),
    )


def presets_report(names: list[str] | None = None, overrides: list[str] | None = None) -> PresetsReport:
    """Return the named presets (default: every built-in one), validated, as one report."""
    chosen = builtin_names() if names is None else names
    return PresetsReport(presets=[preset_info(load_preset(n, overrides)) for n in chosen])
