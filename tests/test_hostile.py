# ruff: noqa: E501  (the corpus is a table: one case per line)
"""Hostile input, through the real CLI in a subprocess: every bad input gets one line and exit 2,
nothing hangs, nothing runs that should not, nothing is left behind (issue 11).

Each case runs `python -m qcli ...` in its own working directory with its own TMPDIR, HOME and
hub cache, a fake HF_TOKEN, and a timeout (a hang is a failure). A case that does not need the
demo checkpoint gets an empty QCLI_CACHE that must stay empty: a bad flag is refused before any
model is built or loaded. Cases that load for real share one demo build per session (built by two
racing `qcli load demo`, which is itself a case). Case ids start with their class:
resource, numbers, config, files, markup, flags, output, interrupt.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_HOSTILEfakeTOKEN0123456789abcdefXYZ"
PLANTED_MARKER = "PLANTED_CODE_RAN"
W = "@W"  # replaced by the case's working directory in args and env values
# QCLI_HOSTILE_TIMEOUT shortens the cheap cases' limit (a quick baseline of code that still hangs).
CHEAP_TIMEOUT = float(os.environ.get("QCLI_HOSTILE_TIMEOUT", "20"))
HEAVY_TIMEOUT = 90.0
MAX_ERROR_LINE = 600  # "one readable line": an 11.7 KB list of model types is not one


@dataclass(frozen=True)
class Ctx:
    """What a case's setup may use: its working directory and the shared demo checkpoint."""

    w: Path
    demo: Path | None


Setup = Callable[[Ctx], None]


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    code: int = 2
    setup: tuple[Setup, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    demo: bool = False  # loads the shared demo build; otherwise QCLI_CACHE is empty and must stay so
    timeout: float = CHEAP_TIMEOUT
    error: bool | None = None  # exactly one `Error:` line; default: code != 0
    out_has: str | None = None
    err_has: tuple[str, ...] = ()
    python_flags: tuple[str, ...] = ()
    check_cache: bool = True


def case(cid: str, *args: str, code: int = 2, setup: Setup | tuple[Setup, ...] = (), **kw) -> Case:
    setups = setup if isinstance(setup, tuple) else (setup,)
    err_has = kw.pop("err_has", ())
    env = kw.pop("env", {})
    if kw.get("demo"):
        kw.setdefault("timeout", HEAVY_TIMEOUT)
    return Case(
        cid,
        tuple(args),
        code,
        setups,
        tuple(env.items()),
        err_has=(err_has,) if isinstance(err_has, str) else tuple(err_has),
        **kw,
    )


# --- fixture builders -------------------------------------------------------------------------

LLAMA: dict = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 512,
    "hidden_size": 256,
    "intermediate_size": 704,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "dtype": "float32",
}
GPT2 = {"model_type": "gpt2", "vocab_size": 512, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 128}
QWEN2_MOE = {
    **LLAMA,
    "model_type": "qwen2_moe",
    "num_experts": 4,
    "moe_intermediate_size": 64,
    "shared_expert_intermediate_size": 128,
    "decoder_sparse_step": 1,
}


def cfg(base: dict = LLAMA, **over: object) -> dict:
    out = dict(base)
    out.update(over)
    return out


def write(rel: str, content: str | bytes | dict | list) -> Setup:
    def run(ctx: Ctx) -> None:
        path = ctx.w / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_text(json.dumps(content), encoding="utf-8")

    return run


def model(config: dict | str | bytes = LLAMA, weights: bytes | None = None, name: str = "m") -> tuple[Setup, ...]:
    out = [write(f"{name}/config.json", config)]
    if weights is not None:
        out.append(write(f"{name}/model.safetensors", weights))
    return tuple(out)


def fifo(rel: str) -> Setup:
    def run(ctx: Ctx) -> None:
        (ctx.w / rel).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(ctx.w / rel)

    return run


def symlink(rel: str, target: str) -> Setup:
    def run(ctx: Ctx) -> None:
        (ctx.w / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, ctx.w / rel)

    return run


def mkdir(rel: str) -> Setup:
    return lambda ctx: (ctx.w / rel).mkdir(parents=True, exist_ok=True)


def demo_copy(rel: str) -> Setup:
    """A directory holding symlinks to the demo checkpoint's files (a model under another path)."""

    def run(ctx: Ctx) -> None:
        assert ctx.demo is not None
        (ctx.w / rel).mkdir(parents=True)
        for f in ctx.demo.iterdir():
            os.symlink(f, ctx.w / rel / f.name)

    return run


def planted() -> tuple[Setup, ...]:
    """Modules in the cwd that shadow the stdlib and third-party ones: importing them leaves a marker."""
    code = f"import pathlib\npathlib.Path(__file__).with_name({PLANTED_MARKER!r}).write_text('ran')\n"
    return tuple(write(f"{n}.py", code) for n in ("json", "yaml", "torch", "typing_extensions"))


def st(header: object, *, length: int | None = None, data: bytes = b"\0" * 8, raw: bytes | None = None) -> bytes:
    """A safetensors file: 8-byte little-endian header length, the JSON header, the data."""
    hb = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(hb) if length is None else length) + hb + data


GOOD_HEADER = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}


def preset_yaml(name: str = "p", dtype: str = "bfloat16", extra: str = "") -> str:
    return f"name: {name!r}\ndescription: hostile\ndtype: {dtype}\n{extra}"


def bomb(levels: int = 9, width: int = 9) -> str:
    """A YAML flow sequence whose aliases expand to width**levels strings (billion laughs)."""
    parts = ["&l0 [" + ",".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        parts.append(f"&l{i} [" + ",".join([f"*l{i - 1}"] * width) + "]")
    return "[" + ", ".join(parts) + "]"


BOMB = bomb()
REGEX_BOMB = "(?:[a-z._0-9]+)+!"  # exponential backtracking on every module name (transformers re.match)
Q4 = "quantization:\n  load_in_4bit: true\n  bnb_4bit_compute_dtype: bfloat16\n"
DEEP_JSON = "[" * 200_000 + "]" * 200_000
DEEP_OBJ = '{"a":' * 100_000 + "1" + "}" * 100_000
DEEP_YAML = "name: x\ndtype: bfloat16\ndescription: " + "[" * 20_000 + "]" * 20_000 + "\n"
HUGE_INT = "1" + "0" * 400
BAD_PRESETS: dict[str, str | bytes] = {
    "bomb-dtype.yaml": f"name: bomb\ndtype: {BOMB}\n",
    "bomb-quant.yaml": f"name: bomb\ndtype: bfloat16\nquantization:\n  load_in_4bit: true\n"
    f"  bnb_4bit_quant_type: {BOMB}\n",
    "bomb-skip.yaml": f"name: bomb\ndtype: bfloat16\n{Q4}  llm_int8_skip_modules: {BOMB}\n",
    "bomb-name.yaml": f"name: {BOMB}\ndtype: bfloat16\n",
    "recursive.yaml": "name: r\ndtype: &a [*a]\n",
    "regex.yaml": f"name: regex\ndtype: bfloat16\n{Q4}  llm_int8_skip_modules: ['{REGEX_BOMB}']\n",
    "longpattern.yaml": f"name: long\ndtype: bfloat16\n{Q4}  llm_int8_skip_modules: ['{'a' * 100_000}']\n",
    "deep.yaml": DEEP_YAML,
    "evil.yaml": f"!!python/object/apply:os.system ['touch {PLANTED_MARKER}']\n",
    "binary.yaml": b"\xff\xfe\x00garbage\x80",
}


def presets_files(*names: str) -> tuple[Setup, ...]:
    out = []
    for n in names:
        out.append(write(n, BAD_PRESETS[n]))
    return tuple(out)


def set_bomb(key: str) -> str:
    return f"{key}={BOMB}"


# --- the corpus -------------------------------------------------------------------------------

M = model()
DEMO = ("demo",)
# fmt: off
CASES: list[Case] = [
    # 1. resource exhaustion from a small input: refused quickly (the timeout is the hang check)
    case("resource-preset-alias-bomb-dtype-show", "presets", "show", "bomb-dtype.yaml", setup=presets_files("bomb-dtype.yaml"), err_has="dtype"),
    case("resource-preset-alias-bomb-dtype-show-json", "presets", "show", "bomb-dtype.yaml", "--json", setup=presets_files("bomb-dtype.yaml")),
    case("resource-preset-alias-bomb-quant-type-estimate", "estimate", "--params", "8b", "--preset", "bomb-quant.yaml", setup=presets_files("bomb-quant.yaml"), err_has="bnb_4bit_quant_type"),
    case("resource-preset-alias-bomb-skip-modules-estimate", "estimate", "--model", "m", "--preset", "bomb-skip.yaml", setup=(*M, *presets_files("bomb-skip.yaml")), err_has="llm_int8_skip_modules"),
    case("resource-preset-alias-bomb-name-estimate", "estimate", "--params", "8b", "--preset", "bomb-name.yaml", setup=presets_files("bomb-name.yaml"), err_has="name"),
    case("resource-preset-alias-bomb-load", "load", *DEMO, "--preset", "bomb-dtype.yaml", setup=presets_files("bomb-dtype.yaml")),
    case("resource-preset-alias-bomb-verify", "verify", *DEMO, "--preset", "bomb-quant.yaml", setup=presets_files("bomb-quant.yaml")),
    case("resource-preset-alias-bomb-compare", "compare", *DEMO, "--presets", "bomb-dtype.yaml", setup=presets_files("bomb-dtype.yaml")),
    case("resource-preset-alias-bomb-reference", "verify", *DEMO, "--preset", "bf16", "--reference", "bomb-dtype.yaml", setup=presets_files("bomb-dtype.yaml")),
    case("resource-preset-recursive-alias", "presets", "show", "recursive.yaml", setup=presets_files("recursive.yaml")),
    case("resource-set-alias-bomb-dtype-show", "presets", "show", "qlora", "--set", set_bomb("dtype"), err_has="--set"),
    case("resource-set-alias-bomb-quant-type-show-json", "presets", "show", "qlora", "--json", "--set", set_bomb("quantization.bnb_4bit_quant_type")),
    case("resource-set-alias-bomb-estimate", "estimate", "--params", "8b", "--preset", "qlora", "--set", set_bomb("dtype")),
    case("resource-set-alias-bomb-skip-modules", "estimate", "--model", "m", "--preset", "qlora", "--set", set_bomb("quantization.llm_int8_skip_modules"), setup=M),
    case("resource-set-alias-bomb-load", "load", *DEMO, "--set", set_bomb("dtype")),
    case("resource-set-alias-bomb-verify", "verify", *DEMO, "--set", set_bomb("quantization.bnb_4bit_compute_dtype")),
    case("resource-set-recursive-alias", "presets", "show", "qlora", "--set", "dtype=&a [*a]"),
    case("resource-regex-backtracking-preset-estimate", "estimate", "--model", "m", "--preset", "regex.yaml", setup=(*M, *presets_files("regex.yaml")), err_has="llm_int8_skip_modules"),
    case("resource-regex-backtracking-set-estimate", "estimate", "--model", "m", "--preset", "qlora", "--set", f"quantization.llm_int8_skip_modules=['{REGEX_BOMB}']", setup=M, err_has="llm_int8_skip_modules"),
    case("resource-regex-backtracking-show", "presets", "show", "regex.yaml", setup=presets_files("regex.yaml"), err_has="llm_int8_skip_modules"),
    case("resource-regex-backtracking-load", "load", *DEMO, "--preset", "regex.yaml", setup=presets_files("regex.yaml")),
    case("resource-regex-backtracking-verify", "verify", *DEMO, "--preset", "qlora", "--set", f"quantization.llm_int8_skip_modules=['{REGEX_BOMB}']"),
    case("resource-regex-backtracking-compare", "compare", *DEMO, "--presets", "bf16,regex.yaml", setup=presets_files("regex.yaml")),
    case("resource-regex-pattern-100k-chars", "estimate", "--model", "m", "--preset", "longpattern.yaml", setup=(*M, *presets_files("longpattern.yaml"))),
    case("resource-gpus-10000000", "estimate", "--params", "8b", "--gpu", "T4", "--gpus", "10000000", err_has="--gpus"),
    case("resource-gpus-10000000-model", "estimate", "--model", "m", "--gpu", "T4", "--gpus", "10000000", setup=M, err_has="--gpus"),
    case("resource-config-layers-1e9", "estimate", "--model", "m", setup=model(cfg(num_hidden_layers=10**9)), err_has="num_hidden_layers"),
    case("resource-config-layers-1e9-gpt2", "estimate", "--model", "m", setup=model(cfg(GPT2, n_layer=10**9)), err_has="n_layer"),
    case("resource-config-layers-1e9-load", "load", "m", "--preset", "bf16", setup=model(cfg(num_hidden_layers=10**9), st(GOOD_HEADER)), err_has="num_hidden_layers"),
    case("resource-max-new-tokens-1e9-load", "load", *DEMO, "--prompt", "x", "--max-new-tokens", "1000000000", err_has="--max-new-tokens"),
    case("resource-max-new-tokens-1e9-compare", "compare", *DEMO, "--presets", "bf16", "--max-new-tokens", "1000000000", err_has="--max-new-tokens"),
    case("resource-fifo-safetensors-estimate", "estimate", "--model", "m", setup=(*M, fifo("m/model.safetensors")), err_has="model.safetensors"),
    case("resource-fifo-safetensors-load", "load", "m", "--preset", "bf16", setup=(*M, fifo("m/model.safetensors")), err_has="model.safetensors"),
    case("resource-fifo-safetensors-verify", "verify", "m", "--preset", "bf16", setup=(*M, fifo("m/model.safetensors")), err_has="model.safetensors"),
    case("resource-fifo-safetensors-compare", "compare", "m", "--presets", "bf16", setup=(*M, fifo("m/model.safetensors")), err_has="model.safetensors"),
    case("resource-fifo-config-json", "estimate", "--model", "m", setup=(fifo("m/config.json"),)),
    case("resource-fifo-config-file-arg", "estimate", "--model", f"{W}/cfg.json", setup=fifo("cfg.json")),
    case("resource-fifo-preset", "estimate", "--params", "8b", "--preset", "p.yaml", setup=fifo("p.yaml")),
    case("resource-fifo-text", "compare", *DEMO, "--presets", "bf16", "--text", "t.txt", setup=fifo("t.txt")),
    case("resource-dev-zero-safetensors", "estimate", "--model", "m", setup=(*M, symlink("m/model.safetensors", "/dev/zero")), err_has="model.safetensors"),
    case("resource-header-2e62-estimate", "estimate", "--model", "m", setup=model(weights=st(GOOD_HEADER, length=2**62)), err_has="model.safetensors"),
    case("resource-header-2e62-load", "load", "m", "--preset", "bf16", setup=model(weights=st(GOOD_HEADER, length=2**62)), err_has="model.safetensors"),
    case("resource-header-2e62-sharded", "estimate", "--model", "m", setup=(*M, write("m/model-00001-of-00002.safetensors", st(GOOD_HEADER, length=2**62))), err_has="model-00001-of-00002.safetensors"),
    case("resource-header-max-u64", "estimate", "--model", "m", setup=model(weights=st(GOOD_HEADER, length=2**64 - 1)), err_has="model.safetensors"),
    case("resource-params-100k-digits", "estimate", "--params", "9" * 100_000, err_has="--params"),
    case("resource-context-1e18", "estimate", "--model", "m", "--context", str(10**18), "--gpu", "T4", setup=M, err_has="--context"),
    # 2. numbers: exit 2 with the flag named; ambiguous ones refused, never guessed
    case("numbers-params-1e1000000", "estimate", "--params", "1e1000000", err_has="--params"),
    case("numbers-params-1e1000000b", "estimate", "--params", "1e1000000b", err_has="--params"),
    case("numbers-params-1-comma-5b", "estimate", "--params", "1,5b", err_has="--params"),
    case("numbers-params-1-comma-5", "estimate", "--params", "1,5", err_has="--params"),
    case("numbers-params-comma-suffix-bits", "estimate", "--params", "7,24B", "--bits", "4", err_has="--params"),
    case("numbers-params-negative", "estimate", "--params", "-5b", err_has="--params"),
    case("numbers-params-zero", "estimate", "--params", "0", err_has="--params"),
    case("numbers-params-nan", "estimate", "--params", "nan", err_has="--params"),
    case("numbers-params-inf", "estimate", "--params", "inf", err_has="--params"),
    case("numbers-params-tiny", "estimate", "--params", "1e-9", err_has="--params"),
    case("numbers-params-huge-int", "estimate", "--params", HUGE_INT, err_has="--params"),
    case("numbers-params-hex", "estimate", "--params", "0x10", err_has="--params"),
    case("numbers-params-two-dots", "estimate", "--params", "1.5.5b", err_has="--params"),
    case("numbers-params-fullwidth", "estimate", "--params", "８b", err_has="--params"),
    case("numbers-gpu-1e1000000GB", "estimate", "--params", "8b", "--gpu", "1e1000000GB", err_has="--gpu"),
    case("numbers-gpu-negative", "estimate", "--params", "8b", "--gpu", "-24GB", err_has="--gpu"),
    case("numbers-gpu-zero", "estimate", "--params", "8b", "--gpu", "0GB", err_has="--gpu"),
    case("numbers-gpu-nan", "estimate", "--params", "8b", "--gpu", "nanGB", err_has="--gpu"),
    case("numbers-gpu-inf", "estimate", "--params", "8b", "--gpu", "infGiB", err_has="--gpu"),
    case("numbers-gpu-comma", "estimate", "--params", "8b", "--gpu", "1,5GB", err_has="--gpu"),
    case("numbers-gpu-sub-byte", "estimate", "--params", "8b", "--gpu", "1e-30GB", err_has="--gpu"),
    case("numbers-gpu-no-unit", "estimate", "--params", "8b", "--gpu", "24", err_has="--gpu"),
    case("numbers-cuda-context-1e1000000", "estimate", "--params", "8b", "--gpu", "T4", "--cuda-context", "1e1000000MiB", err_has="--cuda-context"),
    case("numbers-cuda-context-negative", "estimate", "--params", "8b", "--gpu", "T4", "--cuda-context", "-1MiB", err_has="--cuda-context"),
    case("numbers-margin-nan", "estimate", "--params", "8b", "--gpu", "T4", "--margin", "nan", err_has="--margin"),
    case("numbers-margin-inf", "estimate", "--params", "8b", "--gpu", "T4", "--margin", "inf", err_has="--margin"),
    case("numbers-margin-negative", "estimate", "--params", "8b", "--gpu", "T4", "--margin", "-0.5", err_has="--margin"),
    case("numbers-margin-1e309", "estimate", "--params", "8b", "--gpu", "T4", "--margin", "1e309", err_has="--margin"),
    case("numbers-context-huge-int", "estimate", "--model", "m", "--context", HUGE_INT, setup=M, err_has="--context"),
    case("numbers-context-huge-int-train", "estimate", "--model", "m", "--context", HUGE_INT, "--train", "lora", setup=M, err_has="--context"),
    case("numbers-context-zero", "estimate", "--model", "m", "--context", "0", setup=M, err_has="--context"),
    case("numbers-context-negative", "estimate", "--model", "m", "--context", "-1", setup=M, err_has="--context"),
    case("numbers-batch-huge-int", "estimate", "--model", "m", "--context", "128", "--batch", HUGE_INT, setup=M, err_has="--batch"),
    case("numbers-batch-zero", "estimate", "--model", "m", "--context", "128", "--batch", "0", setup=M, err_has="--batch"),
    case("numbers-batch-negative", "estimate", "--model", "m", "--context", "128", "--batch", "-3", setup=M, err_has="--batch"),
    case("numbers-lora-rank-huge-int", "estimate", "--model", "m", "--train", "lora", "--lora-rank", HUGE_INT, setup=M, err_has="--lora-rank"),
    case("numbers-lora-rank-zero", "estimate", "--model", "m", "--train", "lora", "--lora-rank", "0", setup=M, err_has="--lora-rank"),
    case("numbers-lora-rank-negative", "estimate", "--model", "m", "--train", "qlora", "--lora-rank", "-8", setup=M, err_has="--lora-rank"),
    case("numbers-gpus-zero", "estimate", "--params", "8b", "--gpu", "T4", "--gpus", "0", err_has="--gpus"),
    case("numbers-gpus-negative", "estimate", "--params", "8b", "--gpu", "T4", "--gpus", "-1", err_has="--gpus"),
    case("numbers-gpus-huge-int", "estimate", "--params", "8b", "--gpu", "T4", "--gpus", HUGE_INT, err_has="--gpus"),
    case("numbers-budget-1e1000000", "verify", *DEMO, "--budget", "1e1000000GB", err_has="--budget"),
    case("numbers-budget-nan", "verify", *DEMO, "--budget", "nanGB", err_has="--budget"),
    case("numbers-budget-negative", "verify", *DEMO, "--budget", "-1GB", err_has="--budget"),
    case("numbers-max-memory-1e1000000", "load", *DEMO, "--max-memory", "cpu=1e1000000GB", err_has="--max-memory"),
    case("numbers-max-memory-negative", "load", *DEMO, "--max-memory", "cpu=-5GB", err_has="--max-memory"),
    case("numbers-max-memory-nan", "verify", *DEMO, "--max-memory", "cpu=nanGB", err_has="--max-memory"),
    case("numbers-timeout-zero", "compare", *DEMO, "--presets", "bf16", "--timeout", "0", err_has="--timeout"),
    case("numbers-timeout-negative", "compare", *DEMO, "--presets", "bf16", "--timeout", "-5", err_has="--timeout"),
    case("numbers-timeout-nan", "compare", *DEMO, "--presets", "bf16", "--timeout", "nan", err_has="--timeout"),
    case("numbers-timeout-inf", "compare", *DEMO, "--presets", "bf16", "--timeout", "inf", err_has="--timeout"),
    case("numbers-max-new-tokens-zero-load", "load", *DEMO, "--prompt", "x", "--max-new-tokens", "0", err_has="--max-new-tokens"),
    case("numbers-max-new-tokens-negative-load", "load", *DEMO, "--prompt", "x", "--max-new-tokens", "-1", err_has="--max-new-tokens"),
    case("numbers-max-new-tokens-huge-int-load", "load", *DEMO, "--prompt", "x", "--max-new-tokens", HUGE_INT, err_has="--max-new-tokens"),
    case("numbers-max-new-tokens-zero-compare", "compare", *DEMO, "--presets", "bf16", "--max-new-tokens", "0", err_has="--max-new-tokens"),
    case("numbers-max-new-tokens-negative-compare", "compare", *DEMO, "--presets", "bf16", "--max-new-tokens", "-1", err_has="--max-new-tokens"),
    case("numbers-min-agreement-nan", "verify", *DEMO, "--reference", "bf16", "--min-agreement", "nan", err_has="--min-agreement"),
    case("numbers-min-agreement-negative", "verify", *DEMO, "--reference", "bf16", "--min-agreement", "-1", err_has="--min-agreement"),
    case("numbers-min-agreement-above-one", "verify", *DEMO, "--reference", "bf16", "--min-agreement", "2", err_has="--min-agreement"),
    case("numbers-max-kl-nan", "verify", *DEMO, "--reference", "bf16", "--max-kl", "nan", err_has="--max-kl"),
    case("numbers-max-kl-negative", "verify", *DEMO, "--reference", "bf16", "--max-kl", "-1", err_has="--max-kl"),
    case("numbers-max-kl-inf", "verify", *DEMO, "--reference", "bf16", "--max-kl", "inf", err_has="--max-kl"),
    case("numbers-tolerance-nan", "verify", *DEMO, "--tolerance", "nan", err_has="--tolerance"),
    case("numbers-tolerance-inf", "verify", *DEMO, "--tolerance", "inf%", err_has="--tolerance"),
    case("numbers-tolerance-negative", "verify", *DEMO, "--tolerance", "-5%", err_has="--tolerance"),
    case("numbers-tolerance-huge", "verify", *DEMO, "--tolerance", "1e400%", err_has="--tolerance"),
    # 3. config.json fields: validated, the field named
    case("config-sliding-window-string", "estimate", "--model", "m", "--context", "1000", setup=model(cfg(model_type="mistral", sliding_window="abc")), err_has="sliding_window"),
    case("config-sliding-window-negative", "estimate", "--model", "m", "--context", "1000", setup=model(cfg(model_type="mistral", sliding_window=-5)), err_has="sliding_window"),
    case("config-max-position-string", "estimate", "--model", "m", "--gpu", "T4", setup=model(cfg(max_position_embeddings="abc")), err_has="max_position_embeddings"),
    case("config-max-position-float", "estimate", "--model", "m", "--gpu", "T4", setup=model(cfg(max_position_embeddings=512.5)), err_has="max_position_embeddings"),
    case("config-n-embd-string", "estimate", "--model", "m", setup=model(cfg(GPT2, n_embd="sixty")), err_has="n_embd"),
    case("config-n-inner-float", "estimate", "--model", "m", setup=model(cfg(GPT2, n_inner=100.5)), err_has="n_inner"),
    case("config-n-inner-string", "estimate", "--model", "m", setup=model(cfg(GPT2, n_inner="x")), err_has="n_inner"),
    case("config-n-layer-negative", "estimate", "--model", "m", setup=model(cfg(GPT2, n_layer=-2)), err_has="n_layer"),
    case("config-tie-embeddings-string", "estimate", "--model", "m", setup=model(cfg(tie_word_embeddings="false")), err_has="tie_word_embeddings"),
    case("config-tie-embeddings-int", "estimate", "--model", "m", setup=model(cfg(tie_word_embeddings=2)), err_has="tie_word_embeddings"),
    case("config-mlp-only-layers-int", "estimate", "--model", "m", setup=model(cfg(QWEN2_MOE, mlp_only_layers=5)), err_has="mlp_only_layers"),
    case("config-decoder-sparse-step-zero", "estimate", "--model", "m", setup=model(cfg(QWEN2_MOE, decoder_sparse_step=0)), err_has="decoder_sparse_step"),
    case("config-decoder-sparse-step-string", "estimate", "--model", "m", setup=model(cfg(QWEN2_MOE, decoder_sparse_step="x")), err_has="decoder_sparse_step"),
    case("config-hidden-size-negative", "estimate", "--model", "m", setup=model(cfg(hidden_size=-1)), err_has="hidden_size"),
    case("config-hidden-size-float", "estimate", "--model", "m", setup=model(cfg(hidden_size=100.5)), err_has="hidden_size"),
    case("config-hidden-size-string", "estimate", "--model", "m", setup=model(cfg(hidden_size="4096")), err_has="hidden_size"),
    case("config-hidden-size-bool", "estimate", "--model", "m", setup=model(cfg(hidden_size=True)), err_has="hidden_size"),
    case("config-hidden-size-nan", "estimate", "--model", "m", setup=model(json.dumps(cfg()).replace('"hidden_size": 256', '"hidden_size": NaN')), err_has="hidden_size"),
    case("config-heads-zero", "estimate", "--model", "m", setup=model(cfg(num_attention_heads=0)), err_has="num_attention_heads"),
    case("config-kv-heads-string", "estimate", "--model", "m", setup=model(cfg(num_key_value_heads="8")), err_has="num_key_value_heads"),
    case("config-head-dim-negative", "estimate", "--model", "m", setup=model(cfg(head_dim=-1)), err_has="head_dim"),
    case("config-intermediate-float", "estimate", "--model", "m", setup=model(cfg(intermediate_size=1.5)), err_has="intermediate_size"),
    case("config-vocab-huge-int", "estimate", "--model", "m", setup=model(json.dumps(cfg()).replace('"vocab_size": 512', f'"vocab_size": {HUGE_INT}')), err_has="vocab_size"),
    case("config-max-window-layers-string", "estimate", "--model", "m", setup=model(cfg(model_type="qwen2", use_sliding_window=True, sliding_window=16, max_window_layers="x")), err_has="max_window_layers"),
    case("config-q-lora-rank-negative", "estimate", "--model", "m", setup=model(cfg(model_type="deepseek_v3", q_lora_rank=-5)), err_has="q_lora_rank"),
    case("config-first-k-dense-negative", "estimate", "--model", "m", setup=model(cfg(model_type="deepseek_v3", first_k_dense_replace=-3)), err_has="first_k_dense_replace"),
    case("config-kv-lora-rank-huge", "estimate", "--model", "m", setup=model(json.dumps(cfg(model_type="deepseek_v3")).replace('"vocab_size"', f'"kv_lora_rank": {HUGE_INT}, "vocab_size"')), err_has="kv_lora_rank"),
    case("config-kv-heads-more-than-heads", "estimate", "--model", "m", setup=model(cfg(num_key_value_heads=64)), err_has=("num_key_value_heads", "num_attention_heads")),
    case("config-layer-types-wrong-length", "estimate", "--model", "m", setup=model(cfg(layer_types=["full_attention"])), err_has="layer_types"),
    case("config-hidden-size-whole-float", "estimate", "--model", "m", code=0, setup=model(cfg(hidden_size=256.0)), out_has="whole-number floats"),
    case("config-int-past-digit-limit", "estimate", "--model", "m", setup=model(json.dumps(cfg())[:-1] + ', "foo": ' + "9" * 5000 + "}"), err_has="more than 4300 digits"),
    case("config-layers-1e400-float", "estimate", "--model", "m", setup=model(json.dumps(cfg()).replace('"num_hidden_layers": 4', '"num_hidden_layers": 1e400')), err_has="num_hidden_layers"),
    case("config-partial-rotary-string", "estimate", "--model", "m", setup=model(cfg(model_type="phi3", partial_rotary_factor="half")), err_has="partial_rotary_factor"),
    case("config-rotary-pct-string", "estimate", "--model", "m", setup=model(cfg(model_type="gpt_neox", rotary_pct="x")), err_has="rotary_pct"),
    case("config-sliding-pattern-zero", "estimate", "--model", "m", setup=model(cfg(model_type="gemma3_text", sliding_window_pattern=0)), err_has="sliding_window_pattern"),
    case("config-layer-types-int", "estimate", "--model", "m", setup=model(cfg(layer_types=5)), err_has="layer_types"),
    case("config-opt-proj-dim-string", "estimate", "--model", "m", setup=model(cfg(model_type="opt", ffn_dim=64, word_embed_proj_dim="x")), err_has="word_embed_proj_dim"),
    case("config-falcon-ffn-float", "estimate", "--model", "m", setup=model({"model_type": "falcon", "vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "ffn_hidden_size": 1.5}), err_has="ffn_hidden_size"),
    case("config-model-type-int", "estimate", "--model", "m", setup=model(cfg(model_type=5)), err_has="model_type"),
    case("config-deep-json-array", "estimate", "--model", "m", setup=model(DEEP_JSON), err_has="config.json"),
    case("config-deep-json-object", "estimate", "--model", "m", setup=model(DEEP_OBJ), err_has="config.json"),
    case("config-deep-json-load", "load", "m", setup=model(DEEP_OBJ, st(GOOD_HEADER)), err_has="config.json"),
    case("config-deep-yaml-preset", "presets", "show", "deep.yaml", setup=presets_files("deep.yaml"), err_has="deep.yaml"),
    case("config-deep-set-value", "presets", "show", "qlora", "--set", "description=" + "[" * 20_000 + "]" * 20_000, err_has="--set"),
    case("config-top-level-list", "estimate", "--model", "m", setup=model([1, 2])),
    case("config-empty-file", "estimate", "--model", "m", setup=model("")),
    case("config-binary", "estimate", "--model", "m", setup=model(b"\xff\xfe\x00\x80garbage")),
    case("config-bad-tie-load", "load", "m", "--preset", "bf16", setup=model(cfg(tie_word_embeddings="false"), st(GOOD_HEADER)), err_has="tie_word_embeddings"),
    case("config-n-inner-float-verify", "verify", "m", "--preset", "bf16", setup=model(cfg(GPT2, n_inner=100.5), st(GOOD_HEADER)), err_has="n_inner"),
    case("config-hidden-string-compare", "compare", "m", "--presets", "bf16", setup=model(cfg(hidden_size="x"), st(GOOD_HEADER)), err_has="hidden_size"),
    # 4. model and weight files
    case("files-st-header-not-object", "estimate", "--model", "m", setup=model(weights=st([1, 2, 3])), err_has="model.safetensors"),
    case("files-st-offsets-string", "estimate", "--model", "m", setup=model(weights=st({"w": {"dtype": "F32", "shape": [2], "data_offsets": "x"}})), err_has="model.safetensors"),
    case("files-st-offsets-three", "estimate", "--model", "m", setup=model(weights=st({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4, 8]}})), err_has="model.safetensors"),
    case("files-st-offsets-negative", "estimate", "--model", "m", setup=model(weights=st({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}})), err_has="model.safetensors"),
    case("files-st-offsets-reversed", "estimate", "--model", "m", setup=model(weights=st({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})), err_has="model.safetensors"),
    case("files-st-offsets-huge", "estimate", "--model", "m", setup=model(weights=st({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 10**30]}})), err_has="model.safetensors"),
    case("files-st-offsets-past-digit-limit", "estimate", "--model", "m", setup=model(weights=st(None, raw=b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, ' + b"9" * 5000 + b"]}}")), err_has="more than 4300 digits"),
    case("files-st-offsets-overlap", "estimate", "--model", "m", setup=model(weights=st({"a": GOOD_HEADER["w"], "b": GOOD_HEADER["w"]})), err_has="overlaps"),
    case("files-st-offsets-gap", "estimate", "--model", "m", setup=model(weights=st({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})), err_has="gap"),
    case("files-st-offsets-past-eof", "estimate", "--model", "m", setup=model(weights=st({"w": {"dtype": "F32", "shape": [2000], "data_offsets": [0, 8000]}})), err_has="model.safetensors"),
    case("files-st-header-longer-than-file", "estimate", "--model", "m", setup=model(weights=st(GOOD_HEADER, length=100_000)), err_has="model.safetensors"),
    case("files-st-truncated-3-bytes", "estimate", "--model", "m", setup=model(weights=b"\x01\x02\x03"), err_has="model.safetensors"),
    case("files-st-empty", "estimate", "--model", "m", setup=model(weights=b""), err_has="model.safetensors"),
    case("files-st-header-length-zero", "estimate", "--model", "m", setup=model(weights=st(None, raw=b"")), err_has="model.safetensors"),
    case("files-st-header-invalid-json", "estimate", "--model", "m", setup=model(weights=st(None, raw=b"{broken")), err_has="model.safetensors"),
    case("files-st-header-not-utf8", "estimate", "--model", "m", setup=model(weights=st(None, raw=b'{"\xff": 1}')), err_has="model.safetensors"),
    case("files-st-dtype-unknown", "estimate", "--model", "m", setup=model(weights=st({"w": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}})), err_has="model.safetensors"),
    case("files-st-dtype-int", "estimate", "--model", "m", setup=model(weights=st({"w": {"dtype": 5, "shape": [2], "data_offsets": [0, 8]}})), err_has="model.safetensors"),
    case("files-st-entry-not-object", "estimate", "--model", "m", setup=model(weights=st({"w": 5})), err_has="model.safetensors"),
    case("files-st-shape-mismatch", "estimate", "--model", "m", setup=model(weights=st({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 8]}})), err_has="model.safetensors"),
    case("files-st-metadata-not-object", "estimate", "--model", "m", setup=model(weights=st({"__metadata__": 5, **GOOD_HEADER})), err_has="model.safetensors"),
    case("files-st-is-directory", "estimate", "--model", "m", setup=(*M, mkdir("m/model.safetensors")), err_has="model.safetensors"),
    case("files-st-symlink-loop", "estimate", "--model", "m", setup=(*M, symlink("m/model.safetensors", "model.safetensors")), err_has="model.safetensors"),
    case("files-st-valid-control", "estimate", "--model", "m", "--json", code=0, setup=model(weights=st(GOOD_HEADER))),
    case("files-st-header-not-object-load", "load", "m", "--preset", "bf16", setup=model(weights=st([1, 2, 3])), err_has="model.safetensors"),
    case("files-st-offsets-string-load", "load", "m", "--preset", "nf4", setup=model(weights=st({"w": {"dtype": "F32", "shape": [2], "data_offsets": "x"}})), err_has="model.safetensors"),
    case("files-st-broken-header-load", "load", "m", "--preset", "bf16", setup=model(weights=st(None, raw=b"{broken}")), err_has="model.safetensors"),
    case("files-st-truncated-verify", "verify", "m", "--preset", "bf16", setup=model(weights=b"\x01\x02\x03"), err_has="model.safetensors"),
    case("files-st-longer-than-file-compare", "compare", "m", "--presets", "bf16", setup=model(weights=st(GOOD_HEADER, length=100_000)), err_has="model.safetensors"),
    case("files-model-symlink-loop-relative", "estimate", "--model", "loop", setup=symlink("loop", "loop"), err_has="symbolic link"),
    case("files-model-symlink-loop-absolute", "estimate", "--model", f"{W}/loop", setup=symlink("loop", "loop")),
    case("files-config-symlink-loop", "estimate", "--model", "m", setup=symlink("m/config.json", "config.json"), err_has="config.json"),
    case("files-load-symlink-loop", "load", f"{W}/loop", setup=symlink("loop", "loop"), err_has="symbolic link"),
    case("files-model-dangling-symlink", "verify", "gone", setup=symlink("gone", "/nonexistent/model"), err_has="symbolic link"),
    case("files-model-symlink-loop-pair", "compare", "a", setup=(symlink("a", "b"), symlink("b", "a")), err_has="symbolic link"),
    case("files-path-brackets-spaces", "estimate", "--model", "my model [v2]", code=0, setup=model(name="my model [v2]"), out_has="my model [v2]"),
    case("files-path-brackets-spaces-json", "estimate", "--model", "my model [v2]", "--json", code=0, setup=model(name="my model [v2]")),
    case("files-path-brackets-missing", "estimate", "--model", "no such [dir]", err_has="no such [dir]"),
    case("files-load-dir-without-weights", "load", "my model [v2]", "--preset", "bf16", setup=model(name="my model [v2]"), err_has="my model [v2]"),
    case("files-hub-id-double-dot", "estimate", "--model", "a..b/c"),
    case("files-hub-id-double-dash", "estimate", "--model", "a--b/c"),
    case("files-hub-id-200-chars", "estimate", "--model", "org/" + "x" * 200),
    case("files-hub-id-three-parts", "estimate", "--model", "a/b/c"),
    case("files-hub-id-trailing-slash", "estimate", "--model", "org/"),
    case("files-hub-id-spaces", "estimate", "--model", "my org/my model"),
    case("files-hub-id-unicode", "estimate", "--model", "ünï/côdé"),
    case("files-hub-id-colon", "load", "a/b:c"),
    case("files-hub-id-double-dot-load", "load", "a..b/c", "--preset", "bf16"),
    case("files-hub-offline-token-not-printed", "estimate", "--model", "meta-llama/Meta-Llama-3-8B"),
    case("files-hub-revision-traversal", "estimate", "--model", "org/model", "--revision", "../../etc/passwd"),
    case("files-model-dev-null", "estimate", "--model", "/dev/null"),
    case("files-model-proc-environ", "estimate", "--model", "/proc/self/environ"),
    case("files-model-empty-string", "estimate", "--model", ""),
    case("files-preset-missing", "estimate", "--params", "8b", "--preset", "nope.yaml", err_has="nope.yaml"),
    case("files-preset-directory", "estimate", "--params", "8b", "--preset", "p.yaml", setup=mkdir("p.yaml")),
    case("files-preset-binary", "presets", "show", "binary.yaml", setup=presets_files("binary.yaml")),
    case("files-preset-python-tag", "presets", "show", "evil.yaml", setup=presets_files("evil.yaml")),
    case("files-preset-python-tag-load", "load", *DEMO, "--preset", "evil.yaml", setup=presets_files("evil.yaml")),
    case("files-junit-is-directory", "verify", *DEMO, "--junit", W, err_has="--junit"),
    case("files-junit-unwritable", "verify", *DEMO, "--junit", "/proc/qcli/v.xml", err_has="--junit"),
    case("files-csv-unwritable", "compare", *DEMO, "--presets", "bf16", "--csv", "/proc/qcli/c.csv", err_has="--csv"),
    case("files-markdown-unwritable", "compare", *DEMO, "--presets", "bf16", "--markdown", "/proc/qcli/r.md", err_has="--markdown"),
    case("files-markdown-is-directory", "compare", *DEMO, "--presets", "bf16", "--markdown", W, err_has="--markdown"),
    case("files-plot-without-matplotlib", "compare", *DEMO, "--presets", "bf16", "--plot", "p.png", err_has="--plot"),
    case("files-planted-modules-estimate", "estimate", "--model", "m", code=0, setup=(*M, *planted()), python_flags=("-P",)),
    case("files-planted-modules-compare", "compare", *DEMO, "--presets", "bf16", "--max-new-tokens", "2", code=0, setup=planted(), python_flags=("-P",), demo=True),
    case("files-planted-modules-verify-reference", "verify", *DEMO, "--preset", "bf16", "--reference", "bf16", code=0, setup=planted(), python_flags=("-P",), demo=True),
    # 5. markup: user- and model-provided strings are printed as they are
    case("markup-model-path-close-tag", "estimate", "--model", "d [/]", code=0, setup=model(name="d [/]"), out_has="d [/]"),
    case("markup-model-path-bold", "estimate", "--model", "d [bold]x", code=0, setup=model(name="d [bold]x"), out_has="d [bold]x"),
    case("markup-model-path-fit", "estimate", "--model", "d [/]", "--gpu", "T4", "--context", "128", code=0, setup=model(name="d [/]"), out_has="d [/]"),
    case("markup-model-path-train", "estimate", "--model", "d [red]", "--train", "lora", code=0, setup=model(name="d [red]"), out_has="d [red]"),
    case("markup-preset-name-params", "estimate", "--params", "8b", "--preset", "p.yaml", code=0, setup=write("p.yaml", preset_yaml("[/]", extra=Q4)), out_has="[/]"),
    case("markup-preset-name-model", "estimate", "--model", "m", "--preset", "p.yaml", code=0, setup=(*M, write("p.yaml", preset_yaml("[bold red]evil[/]"))), out_has="[bold red]evil[/]"),
    case("markup-preset-name-fit", "estimate", "--model", "m", "--preset", "p.yaml", "--gpu", "T4", code=0, setup=(*M, write("p.yaml", preset_yaml("[/]"))), out_has="[/]"),
    case("markup-preset-name-show", "presets", "show", "p.yaml", code=0, setup=write("p.yaml", preset_yaml("[/]")), out_has="[/]"),
    case("markup-preset-file-name", "estimate", "--params", "8b", "--preset", "x[b].yaml", code=0, setup=write("x[b].yaml", preset_yaml("[b]")), out_has="[b]"),
    case("markup-set-name", "estimate", "--model", "m", "--preset", "qlora", "--set", "name='[/]'", code=0, setup=M, out_has="[/]"),
    case("markup-set-description-show", "presets", "show", "qlora", "--set", "description='[/]'", code=0, out_has="[/]"),
    case("markup-emoji-code-model-path", "estimate", "--model", "d:smile:x", code=0, setup=model(name="d:smile:x"), out_has="d:smile:x"),
    case("markup-emoji-code-preset-name", "estimate", "--params", "8b", "--preset", "p.yaml", code=0, setup=write("p.yaml", preset_yaml(":thumbs_up:", extra=Q4)), out_has=":thumbs_up:"),
    case("markup-emoji-code-prompt", "load", *DEMO, "--preset", "bf16", "--prompt", ":smile: hi", "--max-new-tokens", "2", code=0, demo=True, out_has=":smile: hi"),
    case("markup-config-quant-method", "estimate", "--model", "m", code=0, setup=model(cfg(quantization_config={"quant_method": "[/]"})), out_has="[/]"),
    case("markup-config-model-type", "estimate", "--model", "m", setup=model(cfg(model_type="[/]"))),
    case("markup-unknown-preset", "estimate", "--params", "8b", "--preset", "[/]", err_has="[/]"),
    case("markup-missing-model", "estimate", "--model", "[/]", err_has="[/]"),
    case("markup-load-missing-model", "load", "[bold]", err_has="[bold]"),
    case("markup-verify-reference", "verify", *DEMO, "--reference", "[/]", err_has="[/]"),
    case("markup-compare-preset", "compare", *DEMO, "--presets", "[/]", err_has="[/]"),
    case("markup-lora-targets", "estimate", "--model", "m", "--train", "lora", "--lora-targets", "[/]", setup=M, err_has="[/]"),
    case("markup-gpu-name", "estimate", "--params", "8b", "--gpu", "[/]", err_has="[/]"),
    case("markup-load-prompt-close-tag", "load", *DEMO, "--preset", "bf16", "--prompt", "[/]", "--max-new-tokens", "2", code=0, demo=True, out_has="[/]"),
    case("markup-load-prompt-bold", "load", *DEMO, "--preset", "bf16", "--prompt", "[bold]The capital", "--max-new-tokens", "2", code=0, demo=True, out_has="[bold]The capital"),
    case("markup-load-prompt-trailing-backslash", "load", *DEMO, "--preset", "bf16", "--prompt", "x\\", "--max-new-tokens", "2", code=0, demo=True, out_has="x\\"),
    case("markup-load-model-path", "load", "d [/] [bold]", "--preset", "bf16", code=0, demo=True, setup=demo_copy("d [/] [bold]"), out_has="d [/] [bold]"),
    case("markup-verify-expect", "verify", *DEMO, "--preset", "bf16", "--expect", "[/]", code=1, error=False, demo=True, out_has="[/]"),
    case("markup-compare-prompt-and-preset-path", "compare", *DEMO, "--presets", "bf16,x[b].yaml", "--prompt", "[/]", "--max-new-tokens", "2", code=0, demo=True, setup=write("x[b].yaml", preset_yaml("[b]")), out_has="x[b].yaml"),
    # 6. flags checked before any model loads or worker starts (the empty cache stays empty)
    case("flags-load-device-map-garbage", "load", *DEMO, "--device-map", "garbage", err_has="--device-map"),
    case("flags-load-max-memory-superscript", "load", *DEMO, "--max-memory", "²=5GB", err_has="--max-memory"),
    case("flags-load-max-memory-missing-gpu", "load", *DEMO, "--max-memory", "0=5GB", err_has="--max-memory"),
    case("flags-load-max-memory-no-key", "load", *DEMO, "--max-memory", "=5GB", err_has="--max-memory"),
    case("flags-load-max-memory-duplicate", "load", *DEMO, "--max-memory", "cpu=5GB,cpu=6GB", err_has="--max-memory"),
    case("flags-load-dtype-garbage", "load", *DEMO, "--dtype", "garbage", err_has="--dtype"),
    case("flags-load-dtype-int8", "load", *DEMO, "--dtype", "int8", err_has="--dtype"),
    case("flags-load-device-cuda", "load", *DEMO, "--device", "cuda", err_has="--device"),
    case("flags-load-device-cuda-99", "load", *DEMO, "--device", "cuda:99", err_has="--device"),
    case("flags-load-device-garbage", "load", *DEMO, "--device", "tpu", err_has="--device"),
    case("flags-load-prompt-empty", "load", *DEMO, "--prompt", "", err_has="--prompt"),
    case("flags-load-prompt-blank", "load", *DEMO, "--prompt", "   ", err_has="--prompt"),
    case("flags-load-set-no-equals", "load", *DEMO, "--set", "nonsense"),
    case("flags-load-set-bad-bool", "load", *DEMO, "--set", "quantization.load_in_4bit=notabool"),
    case("flags-load-unknown-preset", "load", *DEMO, "--preset", "nope"),
    case("flags-verify-reference-bogus", "verify", *DEMO, "--reference", "bogus", err_has="bogus"),
    case("flags-verify-prompt-empty", "verify", *DEMO, "--prompt", "", err_has="--prompt"),
    case("flags-verify-budget-garbage", "verify", *DEMO, "--budget", "abc", err_has="--budget"),
    case("flags-verify-tolerance-garbage", "verify", *DEMO, "--tolerance", "abc", err_has="--tolerance"),
    case("flags-verify-device-map-garbage", "verify", *DEMO, "--device-map", "garbage", err_has="--device-map"),
    case("flags-verify-max-memory-superscript", "verify", *DEMO, "--max-memory", "²=1GB", err_has="--max-memory"),
    case("flags-verify-device-cuda", "verify", *DEMO, "--device", "cuda", err_has="--device"),
    case("flags-verify-min-agreement-without-reference", "verify", *DEMO, "--min-agreement", "0.5", err_has=("--min-agreement", "--reference")),
    case("flags-verify-max-kl-without-reference", "verify", *DEMO, "--max-kl", "0.01", err_has=("--max-kl", "--reference")),
    case("flags-verify-timeout-without-reference", "verify", *DEMO, "--timeout", "60", err_has=("--timeout", "--reference")),
    case("flags-verify-thresholds-without-reference", "verify", *DEMO, "--min-agreement", "0.5", "--max-kl", "0.01", err_has="--min-agreement and --max-kl"),
    case("flags-verify-expect-empty", "verify", *DEMO, "--expect", "", err_has="--expect"),
    case("flags-verify-expect-blank", "verify", *DEMO, "--expect", "  ", err_has="--expect"),
    case("files-junit-empty", "verify", *DEMO, "--junit", "", err_has="--junit is empty"),
    case("files-csv-empty", "compare", *DEMO, "--presets", "bf16", "--csv", "", err_has="--csv is empty"),
    case("files-markdown-empty", "compare", *DEMO, "--presets", "bf16", "--markdown", "", err_has="--markdown is empty"),
    case("files-plot-empty", "compare", *DEMO, "--presets", "bf16", "--plot", "", err_has="--plot is empty"),
    case("flags-compare-presets-empty", "compare", *DEMO, "--presets", "", err_has="--presets"),
    case("flags-compare-presets-commas", "compare", *DEMO, "--presets", ",,,", err_has="--presets"),
    case("flags-compare-presets-duplicate", "compare", *DEMO, "--presets", "bf16,bf16", err_has="--presets"),
    case("flags-compare-presets-unknown", "compare", *DEMO, "--presets", "bf16,nope", err_has="nope"),
    case("flags-compare-reference-bogus", "compare", *DEMO, "--presets", "bf16", "--reference", "bogus", err_has="bogus"),
    case("flags-compare-text-one-token", "compare", *DEMO, "--presets", "bf16", "--text", "t.txt", setup=write("t.txt", "a"), err_has="--text"),
    case("flags-compare-text-empty", "compare", *DEMO, "--presets", "bf16", "--text", "t.txt", setup=write("t.txt", "  \n"), err_has="--text"),
    case("flags-compare-text-missing", "compare", *DEMO, "--presets", "bf16", "--text", "t.txt", err_has="--text"),
    case("flags-compare-text-directory", "compare", *DEMO, "--presets", "bf16", "--text", W, err_has="--text"),
    case("flags-compare-prompt-empty", "compare", *DEMO, "--presets", "bf16", "--prompt", "", err_has="--prompt"),
    case("flags-compare-device-garbage", "compare", *DEMO, "--presets", "bf16", "--device", "tpu", err_has="--device"),
    case("flags-compare-device-cuda", "compare", *DEMO, "--presets", "bf16", "--device", "cuda", err_has="--device"),
    case("flags-estimate-bits-3", "estimate", "--params", "8b", "--bits", "3", err_has="--bits"),
    case("flags-estimate-train-bogus", "estimate", "--model", "m", "--train", "bogus", setup=M, err_has="--train"),
    case("flags-estimate-optimizer-bogus", "estimate", "--model", "m", "--train", "lora", "--optimizer", "bogus", setup=M, err_has="--optimizer"),
    case("flags-estimate-kv-dtype-int8", "estimate", "--model", "m", "--context", "128", "--kv-dtype", "int8", setup=M, err_has="--kv-dtype"),
    case("flags-estimate-dtype-garbage", "estimate", "--model", "m", "--dtype", "garbage", setup=M, err_has="--dtype"),
    case("flags-estimate-lora-targets-empty", "estimate", "--model", "m", "--train", "lora", "--lora-targets", ",", setup=M, err_has="--lora-targets"),
    case("flags-estimate-preset-and-bits", "estimate", "--params", "8b", "--bits", "4", "--preset", "qlora"),
    case("flags-estimate-context-with-params", "estimate", "--params", "8b", "--context", "128"),
    case("flags-show-set-unknown-key", "presets", "show", "qlora", "--set", "quantization.bogus=1", err_has="bogus"),
    case("flags-show-set-both-modes", "presets", "show", "qlora", "--set", "quantization.load_in_8bit=true"),
    case("flags-show-set-through-scalar", "presets", "show", "qlora", "--set", "dtype.x=1"),
    # 7. output rules
    case("output-bare-qcli-prints-help", code=0, out_has="Usage"),
    case("output-version", "--version", code=0, out_has="qcli"),
    case("output-help-load", "load", "--help", code=0, out_has="--preset"),
    case("output-unknown-command", "nosuchcommand"),
    case("output-unknown-option", "estimate", "--nosuch"),
    case("output-missing-argument", "load"),
    case("output-estimate-without-inputs", "estimate"),
    case("output-presets-json-object", "presets", "--json", code=0),
    case("output-presets-json-before-show", "presets", "--json", "show", "qlora", code=0, out_has="qlora"),
    case("output-presets-show-json", "presets", "show", "qlora", "--json", code=0),
    case("output-presets-show-unknown-json", "presets", "show", "nope", "--json", err_has="nope"),
    case("output-presets-json-show-unknown", "presets", "--json", "show", "nope", err_has="nope"),
    case("output-estimate-json-error", "estimate", "--params", "8b", "--json", "--context", "5"),
    case("output-estimate-json-control", "estimate", "--params", "8b", "--bits", "4", "--json", "--gpu", "T4", "--gpus", "2", code=0),
    case("output-unknown-model-type", "estimate", "--model", "m", setup=model(cfg(model_type="no_such_arch")), err_has="model_type"),
    case("output-unknown-model-type-auto-map", "estimate", "--model", "m", setup=model(cfg(model_type="no_such_arch", auto_map={"AutoModelForCausalLM": "modeling_x.XForCausalLM"})), err_has="--trust-remote-code"),
    case("output-unknown-model-type-load", "load", "m", "--preset", "bf16", setup=model(cfg(model_type="no_such_arch"), st(GOOD_HEADER)), err_has="model_type"),
    case("output-bf16-dir-shadows-preset-estimate", "estimate", "--params", "8b", "--preset", "bf16", code=0, setup=mkdir("bf16")),
    case("output-bf16-dir-shadows-preset-show", "presets", "show", "bf16", code=0, setup=mkdir("bf16"), out_has="bfloat16"),
    case("output-qlora-dir-shadows-preset-model", "estimate", "--model", "m", "--preset", "qlora", code=0, setup=(*M, mkdir("qlora"))),
    case("output-bf16-dir-shadows-preset-load", "load", *DEMO, "--preset", "bf16", "--json", code=0, demo=True, setup=mkdir("bf16")),
    case("output-cache-is-file-load", "load", *DEMO, env={"QCLI_CACHE": f"{W}/cachefile"}, setup=write("cachefile", "x"), err_has="QCLI_CACHE", check_cache=False),
    case("output-cache-is-file-verify", "verify", *DEMO, env={"QCLI_CACHE": f"{W}/cachefile"}, setup=write("cachefile", "x"), err_has="QCLI_CACHE", check_cache=False),
    case("output-cache-is-file-compare", "compare", *DEMO, "--presets", "bf16", env={"QCLI_CACHE": f"{W}/cachefile"}, setup=write("cachefile", "x"), err_has="QCLI_CACHE", check_cache=False),
    case("output-cache-under-file", "load", *DEMO, env={"QCLI_CACHE": f"{W}/cachefile/sub"}, setup=write("cachefile", "x"), err_has="QCLI_CACHE", check_cache=False),
    case("output-cache-unwritable", "load", *DEMO, env={"QCLI_CACHE": "/proc/qcli-cache"}, err_has="QCLI_CACHE", check_cache=False),
    case("output-cache-is-file-estimate-control", "estimate", "--model", "demo", "--json", code=0, env={"QCLI_CACHE": f"{W}/cachefile"}, setup=write("cachefile", "x"), check_cache=False),
    # second corpus (2026-11-25): what a fresh probe of estimate and load found
    case("resource-fifo-cuda-context", "estimate", "m", "--gpu", "T4", "--cuda-context", "c.json", setup=(*M, fifo("c.json")), err_has="--cuda-context"),
    case("resource-dev-zero-cuda-context", "estimate", "m", "--gpu", "T4", "--cuda-context", "c.json", setup=(*M, symlink("c.json", "/dev/zero")), err_has="--cuda-context"),
    case("numbers-cuda-context-5000-digits", "estimate", "m", "--gpu", "T4", "--cuda-context", "c.json", setup=(*M, write("c.json", '{"command": "load", "cuda": [{"cuda_context_bytes": ' + "9" * 5000 + "}]}")), err_has="--cuda-context"),
    case("numbers-cuda-context-1e40", "estimate", "m", "--gpu", "T4", "--cuda-context", "c.json", setup=(*M, write("c.json", {"command": "load", "cuda": [{"cuda_context_bytes": 10**40}]})), err_has="--cuda-context"),
    case("numbers-cuda-context-bool", "estimate", "m", "--gpu", "T4", "--cuda-context", "c.json", setup=(*M, write("c.json", {"command": "load", "cuda": [{"cuda_context_bytes": True}]})), err_has="--cuda-context"),
    case("numbers-cuda-context-not-a-list", "estimate", "m", "--gpu", "T4", "--cuda-context", "c.json", setup=(*M, write("c.json", {"command": "load", "cuda": 5})), err_has=("--cuda-context", "a list")),
    case("flags-max-memory-superscript-estimate", "estimate", "m", "--gpu", "T4", "--device-map", "auto", "--max-memory", "²=20GiB", setup=M, err_has="--max-memory"),
    case("flags-max-memory-arabic-zero-estimate", "estimate", "m", "--gpu", "T4", "--device-map", "auto", "--max-memory", "٠=20GiB", setup=M, err_has="--max-memory"),
    case("flags-max-memory-twice-estimate", "estimate", "m", "--gpu", "T4", "--device-map", "auto", "--max-memory", "0=20GiB,0=30GiB", setup=M, err_has="twice"),
    case("flags-max-memory-without-device-map", "estimate", "m", "--gpu", "T4", "--max-memory", "0=1GiB", setup=M, err_has="--device-map"),
    case("flags-max-memory-without-device-map-load", "load", *DEMO, "--max-memory", "cpu=1GiB", err_has="--device-map"),
    case("flags-max-memory-without-gpu", "estimate", "m", "--device-map", "auto", "--max-memory", "0=20GiB", setup=M, err_has="--gpu"),
    case("flags-max-memory-and-cpu-memory", "estimate", "m", "--gpu", "T4", "--device-map", "auto", "--max-memory", "cpu=4GiB", "--cpu-memory", "8GiB", setup=M, err_has="--cpu-memory"),
    *(case(f"flags-empty-{flag[2:]}", "estimate", "m", flag, "", setup=M, err_has=flag) for flag in ("--train", "--bits", "--preset", "--cuda-context", "--cpu-memory", "--max-memory", "--kv-dtype", "--gpu")),
    *(case(f"flags-{flag[2:]}-without-train", "estimate", "m", flag, value, setup=M, err_has="--train") for flag, value in (("--attention", "sdpa"), ("--optimizer", "lion"), ("--mixed-precision", "fp8"), ("--lora-rank", "8"), ("--lora-targets", "q_proj"))),
    case("files-model-name-too-long", "estimate", "m" * 300, err_has="too long"),
    case("files-preset-name-too-long", "estimate", "--params", "8b", "--preset", "p" * 300 + ".yaml", err_has="too long"),
    case("files-model-tilde-nouser", "estimate", "~qcli_no_such_user/m", err_has="qcli_no_such_user"),
    case("files-preset-tilde-nouser", "estimate", "--params", "8b", "--preset", "~qcli_no_such_user/p.yaml", err_has="qcli_no_such_user"),
    case("files-model-empty", "load", "", "--preset", "bf16", err_has="empty"),
    case("files-model-dev-null-positional", "estimate", "/dev/null", err_has="not a regular file"),
    case("files-model-fifo", "estimate", "f", setup=fifo("f"), err_has="not a regular file"),
    case("files-config-not-utf8", "estimate", "m", setup=model(b'{"model_type": "llama", "name": "\xff"}'), err_has="UTF-8"),
    case("flags-argument-not-utf8", "estimate", "--params", "8\udcffb", err_has="UTF-8"),
    case("output-ascii-terminal", "estimate", "m", "--gpu", "T4", "--context", "512", code=0, setup=M, env={"PYTHONIOENCODING": "ascii", "LC_ALL": "C"}, out_has="fits"),
    case("output-columns-zero", "estimate", "--params", "8b", "--bits", "4", code=0, env={"COLUMNS": "0"}, out_has="parameters"),
    # third corpus (2026-11-26): estimate, presets and env probed with a fuzzer's eye
    *(case(f"numbers-gpus-{name}", "estimate", "--params", "8b", "--gpu", "T4", "--gpus", value, err_has="--gpus") for name, value in (("arabic-digit", "٣"), ("fullwidth", "８"), ("plus-sign", "+2"), ("underscore", "1_0"))),
    case("numbers-gpus-5000-digits", "estimate", "--params", "8b", "--gpu", "T4", "--gpus", "9" * 5000, err_has="--gpus"),
    case("numbers-gpu-comma-names-a-size", "estimate", "--params", "8b", "--gpu", "24GB,16GB", err_has="one size per value"),
    case("resource-preset-int-5000-digits", "presets", "show", "p.yaml", setup=write("p.yaml", "name: " + "9" * 5000 + "\ndtype: bfloat16\n"), err_has="more than 4300 digits"),
    case("resource-preset-int-5000-digits-estimate", "estimate", "--params", "8b", "--preset", "p.yaml", setup=write("p.yaml", preset_yaml(extra="quantization:\n  load_in_8bit: true\n  llm_int8_threshold: " + "9" * 5000 + "\n")), err_has="more than 4300 digits"),
    case("resource-set-int-5000-digits", "presets", "show", "qlora", "--set", "description=" + "9" * 5000, err_has="more than 4300 digits"),
    case("numbers-set-threshold-inf", "presets", "show", "int8", "--json", "--set", "quantization.llm_int8_threshold=.inf", err_has="llm_int8_threshold"),
    case("numbers-preset-threshold-1e400", "estimate", "--params", "8b", "--preset", "p.yaml", setup=write("p.yaml", preset_yaml(extra="quantization:\n  load_in_8bit: true\n  llm_int8_threshold: 1e400\n")), err_has="llm_int8_threshold"),
    case("numbers-set-threshold-bool", "presets", "show", "int8", "--set", "quantization.llm_int8_threshold=true", err_has="llm_int8_threshold"),
    case("flags-train-qlora-16-bit-bits", "estimate", "m", "--train", "qlora", "--bits", "16", setup=M, err_has="--train qlora"),
    case("flags-train-qlora-16-bit-preset", "estimate", "m", "--train", "qlora", "--preset", "bf16", "--gpu", "T4", setup=M, err_has="--train qlora"),
    case("files-preset-upper-case-suffix-missing", "presets", "show", "p.YAML", err_has="does not exist"),
    case("flags-set-empty-key-part", "presets", "show", "qlora", "--set", ".dtype=float16", err_has="empty part"),
    case("flags-set-same-key-twice", "estimate", "--params", "8b", "--preset", "qlora", "--set", "dtype=float16", "--set", "dtype=float32", err_has="twice"),
    case("flags-device-map-without-gpu", "estimate", "m", "--device-map", "auto", setup=M, err_has="--gpu"),
    case("flags-cpu-memory-without-gpu", "estimate", "--params", "8b", "--cpu-memory", "64GiB", err_has="--gpu"),
    case("flags-kv-dtype-without-context", "estimate", "m", "--kv-dtype", "float16", setup=M, err_has="--context"),
    case("files-model-leading-space", "estimate", " m", setup=M, err_has="whitespace"),
    # fourth corpus (2026-11-27): report files that would overwrite each other, an input, or the JSON on stdout
    case("files-csv-and-markdown-same-file", "compare", *DEMO, "--presets", "bf16", "--csv", "r.txt", "--markdown", "./r.txt", err_has="same file"),
    case("files-csv-and-plot-same-existing-file", "compare", *DEMO, "--presets", "bf16", "--csv", "r.txt", "--plot", "r.txt", setup=write("r.txt", "old"), err_has="same file"),
    case("files-csv-over-text", "compare", *DEMO, "--presets", "bf16", "--text", "t.txt", "--csv", "t.txt", setup=write("t.txt", "some text to score"), err_has="would overwrite"),
    case("files-markdown-over-preset-file", "compare", *DEMO, "--presets", "bf16,p.yaml", "--markdown", "p.yaml", setup=write("p.yaml", preset_yaml()), err_has="would overwrite"),
    case("files-junit-over-reference-preset", "verify", *DEMO, "--reference", "p.yaml", "--junit", "p.yaml", setup=write("p.yaml", preset_yaml()), err_has="would overwrite"),
    case("files-junit-over-model-config", "verify", "m", "--preset", "bf16", "--junit", "m/config.json", setup=model(weights=st(GOOD_HEADER)), err_has="file of the model"),
    case("files-csv-over-model-weights", "compare", f"{W}/m/config.json", "--presets", "bf16", "--csv", "m/model.safetensors", setup=model(weights=st(GOOD_HEADER)), err_has="file of the model"),
    case("output-junit-to-stdout-with-json", "verify", *DEMO, "--json", "--junit", "/dev/stdout", err_has="standard output"),
    case("output-csv-to-stdout-with-json", "compare", *DEMO, "--presets", "bf16", "--json", "--csv", "/dev/stdout", err_has="standard output"),
    case("flags-dtype-contradicts-dense-bits", "estimate", "m", "--bits", "16", "--dtype", "float32", setup=M, err_has=("--dtype float32", "--bits 16")),
    case("flags-dtype-contradicts-bits-bf16-params", "estimate", "--params", "8b", "--bits", "bf16", "--dtype", "float16", err_has="--dtype"),
    case("flags-dtype-with-params-quantized", "estimate", "--params", "8b", "--bits", "4", "--dtype", "float32", err_has=("--dtype", "--params")),
    case("flags-dtype-with-params-table", "estimate", "--params", "8b", "--dtype", "bfloat16", err_has=("--dtype", "--params")),
    case("flags-dtype-same-as-dense-bits-control", "estimate", "m", "--bits", "bf16", "--dtype", "bfloat16", code=0, setup=M, out_has="bf16"),
    case("flags-batch-without-context", "estimate", "m", "--batch", "4", setup=M, err_has=("--batch", "--context")),
    case("flags-batch-with-params-and-gpu", "estimate", "--params", "8b", "--gpu", "T4", "--batch", "8", err_has="--batch"),
    case("flags-batch-with-train-control", "estimate", "m", "--train", "lora", "--batch", "2", code=0, setup=M, out_has="lora"),
    case("flags-cuda-context-without-gpu", "estimate", "m", "--preset", "bf16", "--cuda-context", "900MiB", setup=M, err_has=("--cuda-context", "--gpu")),
    case("flags-device-arabic-digit", "load", *DEMO, "--device", "cuda:٠", err_has="not a device"),
    case("numbers-tolerance-bare-fraction", "verify", *DEMO, "--tolerance", "0.05", err_has=("--tolerance", "5%")),
    case("flags-revision-with-params", "estimate", "--params", "8b", "--revision", "main", err_has=("--revision", "--params")),
    case("flags-token-with-params", "estimate", "--params", "8b", "--token", "hf_abcdefgh", err_has=("--token", "--params")),
    case("markup-preset-name-bidi-override", "presets", "show", "qlora", "--set", "name=a\u202eb", err_has=("bidirectional", "\\u202e")),
    case("markup-preset-file-name-bidi-isolate", "estimate", "--params", "8b", "--preset", "p.yaml", setup=write("p.yaml", 'name: "x\\u2067y"\ndescription: hostile\ndtype: bfloat16\n'), err_has="bidirectional"),
    case("markup-preset-name-zwj-emoji-control", "presets", "show", "qlora", "--set", "name=👩\u200d💻", code=0, out_has="👩\u200d💻"),
]
# fmt: on


def _base_env(tmp: Path, cache: Path, root: Path) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root / "home"),
        "XDG_CACHE_HOME": str(root / "xdg"),
        "HF_HOME": str(root / "hf"),
        "HF_HUB_OFFLINE": "1",
        "HF_TOKEN": TOKEN,
        "TMPDIR": str(tmp),
        "QCLI_CACHE": str(cache),
        "NO_COLOR": "1",
        "COLUMNS": "160",
        "TERM": "dumb",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    for key in ("LANG", "LC_ALL", "VIRTUAL_ENV"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def _alive(pgid: int, tmp: Path | None = None) -> dict[int, str]:
    """Return {pid: command line} of live (non-zombie) processes in process group `pgid`, or, given the
    sandbox's TMPDIR, carrying it in their environment: workers run in a session of their own."""
    marker = f"TMPDIR={tmp}".encode() if tmp is not None else None
    alive = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            rest = text[text.rindex(")") + 2 :].split()
            if rest[0] == "Z":
                continue
            ours = int(rest[2]) == pgid
            if not ours and marker is not None:
                ours = marker in (stat.parent / "environ").read_bytes().split(b"\0")
            if ours:
                cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                alive[int(stat.parent.name)] = cmd
        except (OSError, ValueError, IndexError):
            continue
    return alive


def _group_alive(pgid: int, tmp: Path | None = None) -> list[str]:
    """Return the command lines of what `_alive` finds."""
    return list(_alive(pgid, tmp).values())


def _reap(pgid: int, grace: float = 3.0, tmp: Path | None = None) -> list[str]:
    """Wait for the group (and the sandbox's other processes) to die; kill and return what was still
    running after the grace period."""
    deadline = time.monotonic() + grace
    left = _alive(pgid, tmp)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _alive(pgid, tmp)
    if left:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    return list(left.values())


@dataclass
class Result:
    code: int
    out: str
    err: str
    seconds: float


@dataclass
class Sandbox:
    """One case's directories: cwd, TMPDIR, and its own (empty) cache."""

    root: Path
    w: Path = field(init=False)
    tmp: Path = field(init=False)
    cache: Path = field(init=False)

    def __post_init__(self) -> None:
        self.w, self.tmp, self.cache = self.root / "w", self.root / "tmp", self.root / "cache"
        self.w.mkdir(parents=True)
        self.tmp.mkdir(parents=True)


def _spawn(cmd: list[str], box: Sandbox, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        cwd=box.w,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: leftovers are found and killed by group
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    """Give the child Python's Ctrl-C handling even when this runner was started with SIGINT ignored (a
    background job, nohup): an inherited SIG_IGN would make every interrupt case a no-op."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _finish(proc: subprocess.Popen, timeout: float, started: float) -> Result | None:
    """Return the exit code and output, or None (after killing its process group) on a hang."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _reap(proc.pid, grace=0)
        proc.communicate()
        return None
    return Result(
        proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"), time.monotonic() - started
    )


def _common_checks(r: Result | None, timeout: float, after: After) -> Result:
    assert r is not None, f"hang: no exit within {timeout:.0f} s"
    both = r.out + r.err
    assert "Traceback" not in both, r.err[-3000:]
    assert TOKEN not in both, "the HF_TOKEN value was printed"
    assert not after.processes, f"processes left running: {after.processes}"
    assert not after.temp_files, f"files left in TMPDIR: {after.temp_files}"
    assert not after.planted_ran, "code planted in the working directory was executed"
    return r


@dataclass
class After:
    """What a run left behind."""

    processes: list[str]
    temp_files: list[str]
    planted_ran: bool
    cache: list[str]  # the case's own cache (must stay empty when the input is refused)


def _after(box: Sandbox, pgid: int) -> After:
    return After(
        processes=_reap(pgid, tmp=box.tmp),
        # torch keeps its compile cache in $TMPDIR/torchinductor_<user> by design (not a qcli leftover).
        temp_files=sorted(p.name for p in box.tmp.iterdir() if not p.name.startswith("torchinductor_")),
        planted_ran=any(box.root.rglob(PLANTED_MARKER)),
        cache=sorted(p.name for p in box.cache.iterdir()) if box.cache.is_dir() else [],
    )


def _demo_leftovers(cache: Path) -> list[str]:
    if not cache.is_dir():
        return []
    return sorted(p.name for p in cache.iterdir() if p.name.startswith(".demo-"))


# --- the shared demo build: two racing `qcli load demo` on an empty cache ----------------------


@dataclass
class DemoBuild:
    cache: Path
    results: list[Result]
    leftovers: list[str]
    checkpoint: Path | None


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory: pytest.TempPathFactory) -> DemoBuild:
    root = tmp_path_factory.mktemp("hostile-demo")
    cache = root / "cache"
    boxes = [Sandbox(root / f"racer{i}") for i in (1, 2)]
    started = time.monotonic()
    procs = [
        _spawn(
            [sys.executable, "-m", "qcli", "load", "demo", "--preset", "bf16", "--json"],
            b,
            _base_env(b.tmp, cache, b.root),
        )
        for b in boxes
    ]
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            _reap(p.pid, grace=0)
            out, err = p.communicate()
        results.append(
            Result(p.returncode, out.decode(errors="replace"), err.decode(errors="replace"), time.monotonic() - started)
        )
        _reap(p.pid)
    leftovers = _demo_leftovers(cache) + [
        f"TMPDIR:{f.name}" for b in boxes for f in b.tmp.iterdir() if not f.name.startswith("torchinductor_")
    ]
    checkpoint = next((d for d in cache.glob("demo-*") if (d / "model.safetensors").is_file()), None)
    if checkpoint is None:  # the race lost the build: build once more so the other cases can run
        b = Sandbox(root / "fallback")
        p = _spawn(
            [sys.executable, "-m", "qcli", "load", "demo", "--preset", "bf16"], b, _base_env(b.tmp, cache, b.root)
        )
        p.communicate(timeout=600)
        checkpoint = next((d for d in cache.glob("demo-*") if (d / "model.safetensors").is_file()), None)
    return DemoBuild(cache, results, leftovers, checkpoint)


# --- running one case ------------------------------------------------------------------------


@dataclass
class Run:
    args: list[str]
    result: Result | None  # None: it hung and was killed
    after: After


def _execute(c: Case, root: Path, build: DemoBuild | None) -> Run:
    """Run one case in a fresh sandbox under `root`; return its output and what it left behind."""
    box = Sandbox(root)
    ctx = Ctx(w=box.w, demo=build.checkpoint if build else None)
    for s in c.setup:
        s(ctx)
    env = _base_env(box.tmp, build.cache if build else box.cache, box.root)
    env.update({k: v.replace(W, str(box.w)) for k, v in c.env})
    args = [a.replace(W, str(box.w)) for a in c.args]
    started = time.monotonic()
    proc = _spawn([sys.executable, *c.python_flags, "-m", "qcli", *args], box, env)
    result = _finish(proc, c.timeout, started)
    return Run(args, result, _after(box, proc.pid))


# Cheap cases run concurrently (each in its own process group and sandbox, each with its own timeout);
# QCLI_HOSTILE_JOBS sets how many at once.
JOBS = int(os.environ.get("QCLI_HOSTILE_JOBS", str(max(2, os.cpu_count() or 2))))


@pytest.fixture(scope="session")
def cheap_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Return the runs of every selected case that needs no demo build, made JOBS at a time."""
    selected = {
        item.callspec.params["c"].id
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_hostile" and not item.callspec.params["c"].demo
    }
    root = tmp_path_factory.mktemp("hostile-cheap")
    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        futures = {c.id: pool.submit(_execute, c, root / c.id, None) for c in CASES if c.id in selected}
    return {cid: f.result() for cid, f in futures.items()}


def _marks(c: Case) -> list:
    return [pytest.mark.slow] if c.demo else []


@pytest.mark.parametrize("c", [pytest.param(c, id=c.id, marks=_marks(c)) for c in CASES])
def test_hostile(c: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    build: DemoBuild | None = None
    if c.demo:
        build = request.getfixturevalue("demo_build")
        if build.checkpoint is None:
            pytest.fail("the demo checkpoint could not be built")
        run = _execute(c, tmp_path, build)
    else:
        run = request.getfixturevalue("cheap_runs")[c.id]
    r = _common_checks(run.result, c.timeout, run.after)

    assert r.code == c.code, f"exit {r.code}, expected {c.code}; stderr: {r.err[-1500:]!r}"
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    error = c.error if c.error is not None else c.code != 0
    if error:
        assert len(lines) == 1 and lines[0].startswith("Error: "), f"want one Error: line, got {r.err[:1500]!r}"
        assert len(lines[0]) <= MAX_ERROR_LINE, f"error line of {len(lines[0])} characters"
        for needle in c.err_has:
            assert needle in lines[0], f"{needle!r} not named in {lines[0]!r}"
    else:
        assert not any(ln.startswith("Error:") for ln in lines), r.err[-1500:]
    if "--json" in run.args and not error:
        data = json.loads(r.out)
        assert isinstance(data, dict), "--json must print one object"
    elif "--json" in run.args:
        assert r.out.strip() == "" or isinstance(json.loads(r.out), dict), r.out[:500]
    if c.out_has is not None:
        assert c.out_has in r.out, f"{c.out_has!r} not in stdout: {r.out[-1500:]!r}"
    if build is not None:
        assert _demo_leftovers(build.cache) == [], "partial demo build left in the cache"
    elif c.check_cache:
        assert not run.after.cache, f"work started before the input was refused: the cache now holds {run.after.cache}"


# --- 8. interrupted work leaves nothing behind -------------------------------------------------


@pytest.mark.slow
def test_hostile_interrupt_demo_race_two_loads(demo_build: DemoBuild) -> None:
    """interrupt-demo-race-two-loads: two `qcli load demo` on an empty cache both succeed."""
    for r in demo_build.results:
        assert "Traceback" not in r.err, r.err[-2000:]
        assert r.code == 0, f"exit {r.code}: {r.err[-1500:]!r}"
        assert isinstance(json.loads(r.out), dict)
    assert demo_build.leftovers == [], f"left behind: {demo_build.leftovers}"


@dataclass(frozen=True)
class SignalCase:
    id: str
    args: tuple[str, ...]
    sig: int
    ready: str  # "worker": a qcli.worker process runs; "build": a partial demo build exists
    demo: bool


# fmt: off
SIGNAL_CASES = [
    SignalCase("interrupt-compare-sigterm-worker", ("compare", "demo", "--presets", "bf16,nf4"), signal.SIGTERM, "worker", True),
    SignalCase("interrupt-compare-sigint-worker", ("compare", "demo", "--presets", "bf16,nf4"), signal.SIGINT, "worker", True),
    SignalCase("interrupt-verify-reference-sigterm-worker", ("verify", "demo", "--preset", "bf16", "--reference", "nf4"), signal.SIGTERM, "worker", True),
    SignalCase("interrupt-demo-build-sigterm", ("load", "demo", "--preset", "bf16"), signal.SIGTERM, "build", False),
    SignalCase("interrupt-demo-build-sigint", ("load", "demo", "--preset", "bf16"), signal.SIGINT, "build", False),
]
# fmt: on


def _is_ready(s: SignalCase, pgid: int, cache: Path, tmp: Path) -> bool:
    if s.ready == "worker":
        return any("qcli.run.worker" in cmd for cmd in _group_alive(pgid, tmp))
    return bool(_demo_leftovers(cache))


@pytest.mark.slow
@pytest.mark.parametrize("s", [pytest.param(s, id=s.id) for s in SIGNAL_CASES])
def test_hostile_interrupt(s: SignalCase, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    build: DemoBuild | None = request.getfixturevalue("demo_build") if s.demo else None
    box = Sandbox(tmp_path)
    cache = build.cache if build else box.cache
    proc = _spawn([sys.executable, "-m", "qcli", *s.args], box, _base_env(box.tmp, cache, box.root))
    started = time.monotonic()
    deadline = started + 120
    while not _is_ready(s, proc.pid, cache, box.tmp):
        if proc.poll() is not None or time.monotonic() > deadline:
            _reap(proc.pid, grace=0, tmp=box.tmp)
            _, err = proc.communicate()
            pytest.fail(f"never reached the point to interrupt (exit {proc.poll()}): {err.decode()[-1000:]!r}")
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, s.sig)  # the parent only, as `kill PID` or a CI runner's cancel does
    r = _common_checks(_finish(proc, 60, started), 60, _after(box, proc.pid))
    assert r.code in ({130, 143} if s.sig == signal.SIGTERM else {130}), f"exit {r.code}: {r.err[-1000:]!r}"
    assert _demo_leftovers(cache) == [], "partial demo build left in the cache"
    if not s.demo and cache.is_dir():
        built = [d for d in cache.glob("demo-*") if d.is_dir()]
        assert all((d / "model.safetensors").is_file() for d in built), "an incomplete demo dir"
