"""Checkpoints whose weights cannot be what config.json claims, built for real from a tiny Llama (nothing
mocked): tensor names transformers cannot sort, PyTorch .bin files that are no dictionary of tensors, and
weights holding NaN or inf (stored so, or past the load dtype's range). Each is exit 2 with one line naming the
file and the tensor, never exit 1 with a library message, and never a load that "works" on NaN weights."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest

from tests.conftest import one_error_line, save_tiny_llama

pytestmark = pytest.mark.slow

TENSOR = "model.layers.0.mlp.up_proj.weight"


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qcli.model.demo import DEMO_VOCAB

    out = tmp_path_factory.mktemp("hostile-weights") / "good"
    save_tiny_llama(out, vocab_size=DEMO_VOCAB)  # the demo's tokenizer fits it
    return out


def _state(good: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(good / "model.safetensors")


def _dir(good: Path, to: Path) -> Path:
    to.mkdir()
    (to / "config.json").write_text((good / "config.json").read_text())
    return to


def _safetensors(good: Path, to: Path, state: dict) -> Path:
    from safetensors.torch import save_file

    d = _dir(good, to)
    save_file(state, d / "model.safetensors", metadata={"format": "pt"})
    return d


@pytest.mark.parametrize("part", ["²", "①"])
def test_a_tensor_name_with_digits_other_than_ascii_is_named(cli, good, tmp_path, part):
    """transformers sorts names by parts, int() on any part isdigit() accepts: `²` was a ValueError, exit 1."""
    import torch

    state = _state(good)
    state[f"model.layers.{part}.w"] = torch.zeros(3)
    d = _safetensors(good, tmp_path / "named", state)
    one_error_line(cli("load", str(d), "--preset", "nf4"), "model.safetensors", f"model.layers.{part}.w")
    one_error_line(cli("estimate", str(d)), "model.safetensors", f"model.layers.{part}.w")


def _bin(good: Path, to: Path, content: str) -> Path:
    import torch

    d = _dir(good, to)
    target = d / "pytorch_model.bin"
    if content == "text":
        target.write_bytes(b"hello world, not a pickle" * 10)
    elif content == "foreign zip":
        with zipfile.ZipFile(target, "w") as z:
            z.writestr("a.txt", "hi")
    elif content == "a list":
        torch.save([1, 2, 3], target)
    elif content == "a non-tensor value":
        torch.save({**_state(good), "extra": 3}, target)
    elif content == "integer weight":
        state = _state(good)
        state[TENSOR] = (state[TENSOR] * 100).to(torch.int32)
        torch.save(state, target)
    elif content == "odd name":
        torch.save({**_state(good), "model.layers.².w": torch.zeros(2)}, target)
    else:  # legacy (pre-zip) pickle of a good state dict
        torch.save(_state(good), target, _use_new_zipfile_serialization=False)
    return d


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("text", "neither a zip archive nor a pickle"),
        ("foreign zip", "not a readable PyTorch checkpoint"),
        ("a list", "holds a list, not a dictionary of tensors"),
        ("a non-tensor value", "'extra' is a int, not a tensor"),
        ("integer weight", f"stores {TENSOR} as I32"),
        ("odd name", "model.layers.².w"),
    ],
)
def test_a_pytorch_bin_that_is_no_float_state_dict_is_bad_input(cli, good, tmp_path, content, needle):
    """Were exit 1 (`KeyError: 101`, `TypeError: cannot convert dictionary update sequence`) or exit 0 (an
    integer weight cast to floats) before."""
    d = _bin(good, tmp_path / "bin", content)
    one_error_line(cli("load", str(d), "--preset", "bf16"), "pytorch_model.bin", needle)


def test_a_legacy_pickle_bin_still_loads(cli, good, tmp_path):
    d = _bin(good, tmp_path / "legacy", "legacy")
    r = cli("load", str(d), "--preset", "bf16", "--json")
    assert r.code == 0, r.err


def test_a_malicious_pickle_bin_is_refused_without_running_it(cli, good, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    d = _dir(good, tmp_path / "evil")
    (d / "pytorch_model.bin").write_bytes(pickle.dumps({"w": Evil()}, protocol=2))
    one_error_line(cli("load", str(d), "--preset", "bf16"), "pytorch_model.bin", "not a readable PyTorch checkpoint")
    assert not marker.exists()


@pytest.mark.parametrize("preset", ["bf16", "nf4", "qlora", "fp4", "int8"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_nan_or_inf_stored_in_a_weight_is_bad_input_for_every_preset(cli, good, tmp_path, preset, value):
    """transformers loads them without a word; quantized, the NaN hides in absmax/offset/SCB: load was exit 0."""
    state = _state(good)
    state[TENSOR][0, 0] = float(value)
    d = _safetensors(good, tmp_path / "nan", state)
    one_error_line(cli("load", str(d), "--preset", preset), "model.safetensors", TENSOR, "NaN or inf")


def _with_tokenizer(d: Path) -> Path:
    from qcli.resources import data_text
    from qcli.run.demo import _tokenizer

    _tokenizer(data_text("sample.txt")).save_pretrained(d)
    return d


def test_nan_weights_fail_verify_with_the_tensor_named_and_stop_compare(cli, good, tmp_path):
    """verify is a CI gate: the load ran, so a failed check (exit 1) names the tensor; load and compare refuse."""
    state = _state(good)
    state["model.norm.weight"][0] = float("nan")
    d = _with_tokenizer(_safetensors(good, tmp_path / "nannorm", state))
    r = cli("verify", str(d), "--preset", "nf4", "--json")
    assert r.code == 1, r.err
    data = r.json()
    check = next(c for c in data["checks"] if c["name"] == "weights_finite")
    assert not check["passed"] and "model.norm.weight" in check["detail"] and "NaN or inf" in check["detail"]
    assert any("NaN" in n for n in data["load"]["notes"])
    one_error_line(cli("compare", str(d), "--presets", "bf16,nf4"), "model.norm.weight", "NaN or inf")
    good_tok = _with_tokenizer(_safetensors(good, tmp_path / "fine", _state(good)))
    r = cli("verify", str(good_tok), "--preset", "nf4", "--json")
    assert next(c for c in r.json()["checks"] if c["name"] == "weights_finite")["passed"], r.out


def test_values_past_float16_range_are_refused_for_fp16_and_load_in_bf16(cli, good, tmp_path):
    state = _state(good)
    state[TENSOR].mul_(1e30)
    d = _safetensors(good, tmp_path / "big", state)
    one_error_line(cli("load", str(d), "--preset", "fp16"), TENSOR, "past float16's range", "--preset bf16")
    r = cli("load", str(d), "--preset", "bf16", "--json")
    assert r.code == 0, r.err
    json.loads(r.out)
    d = _with_tokenizer(d)
    r = cli("verify", str(d), "--preset", "fp16", "--json")
    assert r.code == 1, r.err
    check = next(c for c in r.json()["checks"] if c["name"] == "weights_finite")
    assert not check["passed"] and "past float16's range" in check["detail"], check


@pytest.fixture(scope="module")
def prequant(good: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny Llama saved by transformers pre-quantized: nf4 with double quantization, and int8."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    root = tmp_path_factory.mktemp("prequant")
    configs = {
        "nf4": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        ),
        "int8": BitsAndBytesConfig(load_in_8bit=True),
    }  # fmt: skip
    out = {}
    for name, q in configs.items():
        model = AutoModelForCausalLM.from_pretrained(good, dtype=torch.bfloat16, quantization_config=q)
        model.save_pretrained(root / name)
        out[name] = root / name
    return out


W = "model.layers.0.mlp.up_proj"


def _damaged(src: Path, to: Path, change) -> Path:
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, to)
    state = load_file(src / "model.safetensors")
    change(state)
    save_file(state, to / "model.safetensors", metadata={"format": "pt"})
    return to


def _set(key: str, value):
    return lambda s: s.__setitem__(key, value(s[key]) if callable(value) else value)


@pytest.mark.parametrize(
    ("kind", "change", "needles"),
    [
        ("nf4", lambda s: s.pop(f"{W}.weight.absmax"), [f"no {W}.weight.absmax"]),
        ("nf4", lambda s: s.pop(f"{W}.weight.quant_map"), [f"no {W}.weight.quant_map"]),
        ("nf4", lambda s: s.pop(f"{W}.weight.nested_absmax"), [f"no {W}.weight.nested_absmax"]),
        ("nf4", lambda s: s.pop(f"{W}.weight.quant_state.bitsandbytes__nf4"), ["0 quant_state tensors"]),
        ("nf4", "garbage state", [f"{W}.weight.quant_state.bitsandbytes__nf4", "not the JSON"]),
        ("nf4", _set(f"{W}.weight", lambda t: t[:100]), [f"{W}.weight", "100 bytes stored", "64×32"]),
        ("nf4", _set(f"{W}.weight.absmax", lambda t: t[:3]), [f"{W}.weight.absmax", "3 values stored"]),
        ("int8", lambda s: s.pop(f"{W}.SCB"), [f"no {W}.SCB", "row scales"]),
        ("int8", _set(f"{W}.SCB", lambda t: t[:3]), [f"{W}.SCB", "3 row scales stored", "64 rows"]),
    ],
)
def test_a_prequantized_checkpoint_with_damaged_quantization_state_is_named(
    cli, prequant, tmp_path, kind, change, needles
):
    """Were exit 1 ("issues during automatic conversion ... look at the above report", a report qcli hides) or
    exit 0 (a part of another size loads without a word; the forward pass fails or reads garbage)."""
    import torch

    if change == "garbage state":
        key = f"{W}.weight.quant_state.bitsandbytes__nf4"
        change = _set(key, torch.tensor(list(b"garbage!"), dtype=torch.uint8))
    d = _damaged(prequant[kind], tmp_path / "damaged", change)
    one_error_line(cli("load", str(d), "--preset", kind), "quantized checkpoint is damaged", *needles)


@pytest.mark.parametrize("kind", ["nf4", "int8"])
def test_an_intact_prequantized_checkpoint_still_loads(cli, prequant, kind):
    r = cli("load", str(prequant[kind]), "--preset", kind, "--json")
    assert r.code == 0, r.err


def test_logits_that_overflow_are_named_by_compare_not_as_a_nan_kl(cli, good, tmp_path):
    """Finite weights whose forward pass overflows (q and k ×1e20: scores past bfloat16's range): compare's rows
    fail naming the non-finite logits (was "KL divergence measured as nan ... a bug in qcli")."""
    state = _state(good)
    for key in state:
        if "q_proj" in key or "k_proj" in key:
            state[key].mul_(1e20)
    d = _with_tokenizer(_safetensors(good, tmp_path / "overflow", state))
    r = cli("compare", str(d), "--presets", "bf16,int8", "--json")
    assert r.code == 1, r.err
    errors = [row["error"] or "" for row in r.json()["results"]]
    assert "non-finite logits" in errors[0] and not any("KL divergence" in e for e in errors), errors


@pytest.mark.parametrize("storage", ["float32", "bfloat16", "float16"])
def test_4bit_weights_packed_into_float_storage_are_not_taken_for_nan(cli, good, storage):
    """bnb_4bit_quant_storage float32/bfloat16 packs nibbles into floats, some reading as NaN: not a NaN weight."""
    r = cli("load", str(good), "--preset", "nf4", "--set", f"quantization.bnb_4bit_quant_storage={storage}", "--json")
    assert r.code == 0, r.err
    assert not any("NaN" in note for note in r.json()["notes"])


def test_a_skip_module_entry_matching_no_module_is_bad_input(cli, good):
    """The list replaces transformers' default: a misspelt entry quantized lm_head too, and verify passed."""
    skip = "quantization.llm_int8_skip_modules"
    r = cli("load", str(good), "--preset", "nf4", "--set", f'{skip}=["nonexistent"]')
    one_error_line(r, "'nonexistent' matches no module", "lm_head")
    r = cli("load", str(good), "--preset", "int8", "--set", f'{skip}=["lm_head","down_proj"]', "--json")
    assert r.code == 0, r.err


def test_the_non_finite_scan_reads_in_chunks_and_counts_every_value(monkeypatch):
    import torch

    from qcli.run import checkpoint

    monkeypatch.setattr(checkpoint, "SCAN_CHUNK", 7)  # chunks that do not divide the tensor
    t = torch.zeros(5, 9, dtype=torch.bfloat16)
    t[0, 0], t[2, 3], t[4, 8] = float("nan"), float("inf"), float("-inf")  # first, middle and last chunk
    assert checkpoint._non_finite_count(t) == 3
    assert checkpoint._non_finite_count(t[:, :4]) == 2  # a non-contiguous view is read whole
