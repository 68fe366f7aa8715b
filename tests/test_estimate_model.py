"""`qcli estimate --model`: real configs, unquantized layers, KV cache, training, fit."""

import json

import pytest

from qcli.formats import NF4_DQ, storage_bytes
from qcli.modelspec import from_config
from tests.conftest import FIXTURES, fixture_config


def est(cli, name, *args):
    r = cli("estimate", "--model", str(FIXTURES / f"{name}.json"), *args, "--json")
    assert r.code == 0, r.err
    return r.json()


def test_llama3_qlora_is_about_5_7_gb_not_4_1(cli):
    data = est(cli, "llama3-8b", "--preset", "qlora")
    assert 5.6e9 < data["weight_bytes"] < 5.8e9
    spec = from_config(fixture_config("llama3-8b"))
    quantized = sum(storage_bytes(NF4_DQ, t.numel, t.rows) for t in spec.tensors if t.role == "linear")
    unquantized = sum(t.numel * 2 for t in spec.tensors if t.role not in {"linear", "buffer"})
    buffers = sum(t.numel * 4 for t in spec.tensors if t.role == "buffer")
    assert data["weight_bytes"] == quantized + unquantized + buffers
    assert data["groups"]["lm_head"] == 128256 * 4096
    assert any(c["name"] == "lm_head (bfloat16)" for c in data["components"])


def test_skip_modules_replace_the_default_list(cli, tmp_path):
    preset = tmp_path / "skip.yaml"
    preset.write_text(
        "name: skip\ndtype: bfloat16\nquantization:\n  load_in_4bit: true\n  llm_int8_skip_modules: [mlp.down_proj]\n"
    )
    data = est(cli, "llama3-8b", "--preset", str(preset))
    names = {c["name"] for c in data["components"]}
    assert "lm_head (bfloat16)" not in names  # lm_head is quantized once the default list is replaced
    kept = next(c for c in data["components"] if c["name"].startswith("linears kept unquantized"))
    assert kept["bytes"] == 32 * 4096 * 14336 * 2  # every down_proj stays in bf16


def test_kv_cache_gqa(cli):
    data = est(cli, "llama3-8b", "--preset", "bf16", "--context", "8192", "--batch", "2")
    assert data["kv_cache_bytes"] == 2 * 32 * 8 * 128 * 8192 * 2 * 2  # 2·L·kv·hd·T·B·bytes


def test_kv_cache_sliding_window_is_capped(cli):
    mistral = est(cli, "mistral-7b-v0.1", "--preset", "bf16", "--context", "32768")
    assert mistral["kv_cache_bytes"] == 2 * 32 * 8 * 128 * 4096 * 2  # capped at the 4096 window
    gemma = est(cli, "gemma-2-9b", "--preset", "bf16", "--context", "8192")
    per_token_layer = 2 * 8 * 256 * 2
    assert gemma["kv_cache_bytes"] == per_token_layer * (21 * 4096 + 21 * 8192)  # alternating layers


def test_training_qlora_counts_adapters_and_activations(cli):
    data = est(cli, "llama3-8b", "--train", "qlora", "--lora-rank", "16", "--context", "2048")
    t = data["training"]
    assert data["preset"] == "qlora"
    per_layer = 16 * ((4096 + 4096) * 2 + (4096 + 1024) * 2 + (4096 + 14336) * 3)
    assert t["trainable_params"] == 32 * per_layer
    assert "Korthikanti" in t["activation_formula"]
    assert t["total_bytes"] == sum(c["bytes"] for c in t["components"])
    assert data["total_bytes"] == data["weight_bytes"] + t["total_bytes"]
    ckpt = est(cli, "llama3-8b", "--train", "qlora", "--context", "2048", "--grad-checkpointing")
    assert ckpt["training"]["total_bytes"] < t["total_bytes"]


def test_full_training_bf16_is_12_bytes_per_param_plus_activations(cli):
    data = est(cli, "llama3-8b", "--preset", "bf16", "--train", "full", "--context", "512")
    t = data["training"]
    grads_and_adam = sum(c["bytes"] for c in t["components"] if c["name"].startswith(("gradients", "optimizer")))
    assert grads_and_adam + data["weight_bytes"] - 512 == 12 * data["params"]  # 512 B of rope buffers


def test_full_training_of_quantized_model_is_bad_input(cli):
    r = cli("estimate", "--model", str(FIXTURES / "llama3-8b.json"), "--preset", "qlora", "--train", "full")
    assert r.code == 2


def test_multi_gpu_split_and_recommendation(cli):
    data = est(cli, "mixtral-8x7b", "--preset", "bf16", "--gpu", "A100-80GB", "--gpus", "2")
    assert data["fits"] is True
    assert [bool(d["assigned_bytes"]) for d in data["devices"]] == [True, True]
    assert sum(d["assigned_bytes"] for d in data["devices"]) == data["total_bytes"]
    one = est(cli, "mixtral-8x7b", "--preset", "bf16", "--gpu", "A100-80GB")
    assert one["fits"] is False and one["offloaded_bytes"] > 0


def test_t4_training_recommends_fp16_qlora(cli):
    data = est(cli, "llama3-8b", "--train", "qlora", "--context", "1024", "--gpu", "T4", "--grad-checkpointing")
    assert data["recommendation"]["preset"] == "nf4-fp16"
    assert any("bf16" in n for n in data["notes"] + data["recommendation"]["notes"])


def test_max_context_that_fits(cli):
    data = est(cli, "llama3-8b", "--preset", "qlora", "--gpu", "7GiB")
    assert 0 < data["max_context"] < 8192
    assert est(cli, "llama3-8b", "--preset", "qlora", "--gpu", "7GiB", "--context", str(data["max_context"]))["fits"]
    more = est(cli, "llama3-8b", "--preset", "qlora", "--gpu", "7GiB", "--context", str(data["max_context"] + 1))
    assert more["fits"] is False


def test_moe_experts_stay_unquantized(cli):
    data = est(cli, "mixtral-8x7b", "--preset", "qlora")
    experts = next(c for c in data["components"] if c["name"].startswith("MoE experts"))
    assert experts["bytes"] == 32 * 8 * 3 * 4096 * 14336 * 2
    assert any("MoE" in n for n in data["notes"])


def test_demo_model_name_needs_no_files(cli):
    data = cli("estimate", "--model", "demo", "--preset", "qlora", "--json").json()
    assert data["model_type"] == "llama" and data["params"] > 0


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"model_type": "llama"}', "hidden_size"),
        (
            '{"model_type": "llama", "hidden_size": -4, "intermediate_size": 8, "num_hidden_layers": 1, '
            '"num_attention_heads": 1, "vocab_size": 8}',
            "hidden_size",
        ),
        ('{"model_type": "no_such_arch_xyz", "hidden_size": 8}', "config.json"),
        ('{"hidden_size": 8}', "model_type"),
    ],
)
def test_bad_configs_exit_2(cli, tmp_path, content, needle):
    path = tmp_path / "config.json"
    path.write_text(content)
    r = cli("estimate", "--model", str(path))
    assert r.code == 2, r.err
    assert needle in r.err and len(r.err.strip().splitlines()) == 1


def test_missing_model_dir_and_missing_config(cli, tmp_path):
    assert cli("estimate", "--model", str(tmp_path / "nope")).code == 2
    assert "no config.json" in cli("estimate", "--model", str(tmp_path)).err


def test_local_safetensors_are_read(cli, tmp_path):
    import struct

    header = json.dumps({"w": {"dtype": "BF16", "shape": [4, 4], "data_offsets": [0, 32]}}).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 32)
    (tmp_path / "config.json").write_text(json.dumps(fixture_config("gpt2")))
    data = cli("estimate", "--model", str(tmp_path), "--bits", "4", "--json").json()
    assert data["stored"] == {"BF16": 32}
