"""`qcli load` on the demo model, for real, under every built-in preset (bitsandbytes on the CPU)."""

import pytest

from qcli.plan.formats import Format, storage_bytes
from qcli.plan.presets import builtin_names, load_preset
from qcli.run.loader import LoadOptions, load_report

pytestmark = pytest.mark.slow


def independent_count(model) -> int:
    """Bytes from the storage formula for quantized weights + element sizes for everything else."""
    total = 0
    for module in model.modules():
        for _, p in module.named_parameters(recurse=False):
            state = getattr(p, "quant_state", None)
            if state is not None:
                fmt = Format(state.quant_type, "4bit", double_quant=bool(state.nested))
                total += storage_bytes(fmt, state.shape.numel(), state.shape[0])
            elif type(p).__name__ == "Int8Params":
                total += storage_bytes(Format("int8", "int8"), p.numel(), p.shape[0])
            else:
                total += p.numel() * p.element_size()
        for _, b in module.named_buffers(recurse=False):
            total += b.numel() * b.element_size()
    return total


@pytest.mark.parametrize("preset", builtin_names())
def test_every_preset_loads_and_matches_the_estimate(preset):
    report, loaded = load_report(LoadOptions(model="demo", preset=preset, device="auto"))
    assert report.device == "cpu" and report.cuda is None
    assert report.memory_bytes == independent_count(loaded.model)
    assert abs(report.estimate_error_percent) <= 0.5
    fmt = load_preset(preset).weight_format()
    c = report.census
    if fmt.kind == "4bit":
        assert c.linear4bit == c.quantizable_linears == 28 and c.linear_unquantized == 1  # lm_head kept
        assert report.footprint_bytes < report.memory_bytes  # get_memory_footprint misses quant_state
    elif fmt.kind == "int8":
        assert c.linear8bit == 28 and report.memory_bytes_by_kind["int8 row scales (SCB)"] > 0
    else:
        assert c.linear4bit == c.linear8bit == 0 and report.footprint_bytes == report.memory_bytes


def test_load_cli_prompt_and_json(cli):
    r = cli("load", "demo", "--preset", "qlora", "--prompt", "The capital of France is", "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert data["cuda"] is None and data["rss_bytes"] > 0
    assert "Paris" in data["generation"]["text"]
    assert data["memory_bytes"] == data["estimate_bytes"]


def test_load_table_output(cli):
    r = cli("load", "demo", "--preset", "nf4")
    assert r.code == 0 and "memory_bytes" in r.out and "absent" in r.out and "Linear4bit" in r.out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["/no/such/dir"], "no such"),
        (["demo", "--device", "cuda"], "no CUDA"),
        (["demo", "--device", "tpu"], "not a device"),
        (["demo", "--preset", "nope"], "unknown preset"),
        (["demo", "--max-memory", "gpu0=20"], "--device-map"),
        (["demo", "--device-map", "auto", "--max-memory", "gpu0=20"], "DEVICE=SIZE"),
    ],
)
def test_load_bad_input(cli, args, needle):
    r = cli("load", *args)
    assert r.code == 2 and needle in r.err and "Traceback" not in r.err


@pytest.mark.slow
@pytest.mark.parametrize("command", ["load", "verify"])
def test_a_max_memory_that_pushes_quantized_modules_to_disk_is_bad_input(cli, command):
    """transformers' bitsandbytes quantizer refuses to dispatch quantized modules to the CPU or disk: that was
    exit 1 with 'is the checkpoint complete? re-download it'."""
    r = cli(command, "demo", "--preset", "qlora", "--device-map", "sequential", "--max-memory", "cpu=10KB")
    assert r.code == 2, (r.code, r.err)
    [line] = r.err.strip().splitlines()
    assert "--max-memory cpu=10KB" in line and "cannot offload quantized modules" in line, line
    assert "re-download" not in line


def test_missing_config_is_bad_input(cli, tmp_path):
    assert cli("load", str(tmp_path)).code == 2


def test_broken_header_is_bad_input_naming_the_file(cli, tmp_path):
    import json

    from qcli.model.demo import DEMO_CONFIG

    (tmp_path / "config.json").write_text(json.dumps(DEMO_CONFIG))
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    r = cli("load", str(tmp_path), "--preset", "bf16")
    assert r.code == 2 and "model.safetensors" in r.err and "not valid JSON" in r.err


def test_mismatched_checkpoint_is_bad_input_naming_the_weights(cli, tmp_path):
    import json
    import struct

    from qcli.model.demo import DEMO_CONFIG

    (tmp_path / "config.json").write_text(json.dumps(DEMO_CONFIG))
    # A well-formed file whose embedding has the wrong shape, and nothing else: transformers' loading report
    # names both problems (tests/test_checkpoint_match.py has the other kinds).
    header = json.dumps({"model.embed_tokens.weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header.encode() + bytes(8))
    r = cli("load", str(tmp_path), "--preset", "bf16")
    assert r.code == 2 and "does not match its config" in r.err and "Traceback" not in r.err
    assert "weight(s) missing" in r.err and "model.embed_tokens.weight 2 stored" in r.err


@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory) -> str:
    """A tiny Llama saved in bf16 (config dtype bfloat16), random weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("bf16-llama")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )  # fmt: skip
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    return str(out)


@pytest.mark.parametrize("preset", ["bf16", "qlora", "int8"])
def test_dtype_override_is_estimated_with_the_same_dtype(cli, bf16_checkpoint, preset):
    """`load --dtype float32` on a bf16 checkpoint: the estimate uses float32 too (issue 9)."""
    r = cli("load", bf16_checkpoint, "--preset", preset, "--dtype", "float32", "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert data["dtype"] == "float32"
    assert abs(data["estimate_error_percent"]) <= 0.1
    assert data["estimate_bytes"] == data["memory_bytes"]
