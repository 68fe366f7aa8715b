"""A checkpoint whose weights are not the ones its config describes is bad input (exit 2 naming the
weights), under every kind of preset, in load and verify; the checkpoints that are fine still load clean.

Real tiny models (transformers + bitsandbytes on the CPU, nothing mocked), built once for the module;
each broken one is the good checkpoint's weights beside an edited config.json, or edited weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

pytestmark = pytest.mark.slow

TINY = {
    "vocab_size": 512,  # the demo tokenizer's (qcli.model.demo.DEMO_VOCAB)
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}


def _edited(root: Path, name: str, source: Path, whole: dict | None = None, **config: object) -> str:
    """A directory holding `source`'s files (linked) with its config.json edited, or replaced by `whole`."""
    out = root / name
    out.mkdir()
    for f in source.iterdir():
        if f.name != "config.json":
            os.symlink(f, out / f.name)
    data = whole or json.loads((source / "config.json").read_text()) | config
    (out / "config.json").write_text(json.dumps(data))
    return str(out)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from qcli.resources import data_text
    from qcli.run.demo import _tokenizer

    root = tmp_path_factory.mktemp("match")
    out: dict[str, str] = {}
    tokenizer = _tokenizer(data_text("sample.txt"))  # the demo's BPE tokenizer: verify and compare need one
    for name, tie in (("untied", False), ("tied", True)):
        torch.manual_seed(0)
        LlamaForCausalLM(LlamaConfig(**TINY, tie_word_embeddings=tie)).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        out[name] = str(root / name)
    good = root / "untied"
    out["morelayers"] = _edited(root, "morelayers", good, num_hidden_layers=4)
    out["fewerlayers"] = _edited(root, "fewerlayers", good, num_hidden_layers=1)
    out["shape"] = _edited(root, "shape", good, intermediate_size=48)
    gpt2 = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 512, "n_embd": 32, "n_head": 4}
    out["archswap"] = _edited(root, "archswap", good, whole=gpt2)
    bnb = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    out["fakeprequant"] = _edited(root, "fakeprequant", good, quantization_config=bnb)
    out["tiedconfig"] = _edited(root, "tiedconfig", good, tie_word_embeddings=True)  # over an untied lm_head
    weights = load_file(good / "model.safetensors")
    for name, kept in (
        ("missing", {k: v for k, v in weights.items() if "layers.1.mlp" not in k}),
        ("extra", {**weights, "model.bogus.weight": torch.zeros(3, 3)}),
        # int32(w × 100): transformers casts it to the load dtype without a word, a weight 100 times too large
        (
            "intweight",
            {
                **weights,
                "model.layers.0.mlp.up_proj.weight": (weights["model.layers.0.mlp.up_proj.weight"] * 100).to(
                    torch.int32
                ),
            },
        ),
        ("boolbuffer", {**weights, "model.layers.0.self_attn.bias": torch.ones(4, 4, dtype=torch.bool)}),
    ):
        (root / name).mkdir()
        (root / name / "config.json").write_text((good / "config.json").read_text())
        tokenizer.save_pretrained(root / name)
        save_file(kept, root / name / "model.safetensors", metadata={"format": "pt"})
        out[name] = str(root / name)
    return out


CLEAN = [("untied", "qlora"), ("tied", "qlora"), ("tied", "int8"), ("tied", "bf16")]


@pytest.mark.parametrize(("name", "preset"), CLEAN)
def test_checkpoints_that_match_load_clean(cli, ckpts, name, preset):
    """A tied lm_head and rotary inv_freq (a non-persistent buffer) are not in the checkpoint, legitimately
    (the demo loads clean under every preset in test_load.py)."""
    r = cli("load", ckpts[name], "--preset", preset, "--json")
    assert r.code == 0, r.err
    assert r.json()["memory_bytes"] > 0


@pytest.mark.parametrize(
    ("name", "needles"),
    [
        ("morelayers", ["18 weight(s) missing", "model.layers.2.input_layernorm.weight"]),
        ("fewerlayers", ["9 unexpected weight(s)", "model.layers.1."]),
        ("missing", ["3 weight(s) missing", "model.layers.1.mlp.down_proj.weight"]),
        ("extra", ["1 unexpected weight(s) (model.bogus.weight)"]),
        ("archswap", ["weight(s) missing (transformer.h.0.", "unexpected weight(s) (model.embed_tokens.weight"]),
        ("shape", ["6 weight(s) of another shape", "model.layers.0.mlp.down_proj.weight 32×64 stored, 32×48 in"]),
    ],
)
@pytest.mark.parametrize("preset", ["bf16", "qlora", "nf4", "int8"])
def test_weights_that_do_not_match_the_config_are_bad_input(cli, ckpts, name, needles, preset):
    r = cli("load", ckpts[name], "--preset", preset)
    assert r.code == 2, (r.code, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "does not match its config" in lines[0], r.err
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in r.err and not r.out


@pytest.mark.parametrize("command", ["load", "verify", "compare"])
def test_a_weight_stored_as_integers_without_a_quantization_config_is_bad_input(cli, ckpts, command):
    args = ("--presets", "bf16,nf4") if command == "compare" else ("--preset", "qlora")
    r = cli(command, ckpts["intweight"], *args)
    assert r.code == 2, (r.code, r.err)
    line = r.err.strip()
    assert "stores model.layers.0.mlp.up_proj.weight as I32" in line and "no quantization_config" in line, line
    assert len(line.splitlines()) == 1


def test_an_integer_tensor_that_is_no_weight_is_left_to_transformers(cli, ckpts):
    """GPT-2-style boolean attention masks are buffers, not weights: the dtype check leaves them alone (transformers
    then reports the tensor as unexpected here, since this Llama has no such buffer)."""
    r = cli("load", ckpts["boolbuffer"], "--preset", "bf16")
    assert "stores" not in r.err and "unexpected weight(s) (model.layers.0.self_attn.bias)" in r.err, r.err


@pytest.mark.parametrize(("command", "preset"), [("load", "bf16"), ("verify", "qlora")])
def test_a_tied_config_over_an_untied_checkpoint_is_bad_input(cli, ckpts, command, preset):
    """transformers does not tie embeddings that the checkpoint stores with different values (it only warns):
    the load was reported as if nothing were wrong, 32% above the estimate of the tied model it describes."""
    r = cli(command, ckpts["tiedconfig"], "--preset", preset)
    assert r.code == 2, (r.code, r.out, r.err)
    [line] = r.err.strip().splitlines()
    assert "tie_word_embeddings" in line and "lm_head.weight" in line, line


def test_a_quantization_config_over_plain_weights_is_bad_input(cli, ckpts):
    r = cli("load", ckpts["fakeprequant"], "--preset", "nf4")
    assert r.code == 2, r.err
    assert "not stored quantized" in r.err and "model.layers.0.self_attn.q_proj" in r.err


@pytest.mark.parametrize("name", ["morelayers", "shape", "fakeprequant"])
def test_verify_never_passes_a_checkpoint_that_does_not_match(cli, ckpts, tmp_path, name):
    junit = tmp_path / "v.xml"
    r = cli("verify", ckpts[name], "--preset", "nf4", "--junit", str(junit))
    assert r.code == 2, (r.code, r.out, r.err)
    assert "PASSED" not in r.out
    [error] = ET.parse(junit).getroot().findall("testsuite/testcase/error")
    assert name in error.get("message") and "Error:" in error.get("message")


def test_verify_reference_and_compare_stop_on_it_with_exit_2(cli, ckpts):
    """The reference worker loads first, in its own process: its bad input is the run's (exit 2)."""
    r = cli("verify", ckpts["morelayers"], "--preset", "nf4", "--reference", "bf16")
    assert r.code == 2 and "does not match its config" in r.err and "worker exit code" not in r.err, r.err
    r = cli("compare", ckpts["morelayers"], "--presets", "bf16,nf4", "--json")
    assert r.code == 2 and "18 weight(s) missing" in r.err and not r.out, r.err
