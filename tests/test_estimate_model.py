"""`qcli estimate --model`: real configs, unquantized layers, KV cache, training, fit."""

import json

import pytest

from qcli.model.describe import from_config
from qcli.plan.formats import NF4_DQ, storage_bytes
from tests.conftest import FIXTURES, fixture_config, plan


def est(cli, name, *args):
    r = cli("estimate", "--model", str(FIXTURES / f"{name}.json"), *args, "--json")
    assert r.code == 0, r.err
    return r.json()


def test_llama3_qlora_is_about_5_7_gb_not_4_1(cli):
    data = est(cli, "llama3-8b", "--preset", "qlora")
    assert 5.6e9 < plan(data)["weight_bytes"] < 5.8e9
    spec = from_config(fixture_config("llama3-8b"))
    quantized = sum(storage_bytes(NF4_DQ, t.numel, t.rows) for t in spec.tensors if t.role == "linear")
    unquantized = sum(t.numel * 2 for t in spec.tensors if t.role not in {"linear", "buffer"})
    buffers = sum(t.numel * 4 for t in spec.tensors if t.role == "buffer")
    assert plan(data)["weight_bytes"] == quantized + unquantized + buffers
    assert data["model"]["params_by_group"]["lm_head"] == 128256 * 4096
    kept = [(c["kind"], c["group"], c["dtype"]) for c in plan(data)["components"]]
    assert ("weights", "lm_head", "bfloat16") in kept


def test_skip_modules_replace_the_default_list(cli, tmp_path):
    preset = tmp_path / "skip.yaml"
    preset.write_text(
        "name: skip\ndtype: bfloat16\nquantization:\n  load_in_4bit: true\n  llm_int8_skip_modules: [mlp.down_proj]\n"
    )
    data = est(cli, "llama3-8b", "--preset", str(preset))
    groups = {c["group"] for c in plan(data)["components"]}
    assert "lm_head" not in groups  # lm_head is quantized once the default list is replaced
    kept = next(c for c in plan(data)["components"] if c["group"] == "linear_unquantized")
    assert kept["size_bytes"] == 32 * 4096 * 14336 * 2  # every down_proj stays in bf16


def test_kv_cache_gqa(cli):
    data = est(cli, "llama3-8b", "--preset", "bf16", "--context", "8192", "--batch", "2")
    assert plan(data)["kv_cache_bytes"] == 2 * 32 * 8 * 128 * 8192 * 2 * 2  # 2·L·kv·hd·T·B·bytes


def test_kv_cache_sliding_window_is_capped(cli):
    mistral = est(cli, "mistral-7b-v0.1", "--preset", "bf16", "--context", "32768")
    assert plan(mistral)["kv_cache_bytes"] == 2 * 32 * 8 * 128 * 4096 * 2  # capped at the 4096 window
    gemma = est(cli, "gemma-2-9b", "--preset", "bf16", "--context", "8192")
    per_token_layer = 2 * 8 * 256 * 2
    assert plan(gemma)["kv_cache_bytes"] == per_token_layer * (21 * 4096 + 21 * 8192)  # alternating layers


def test_training_qlora_counts_adapters_and_activations(cli):
    data = est(cli, "llama3-8b", "--train", "qlora", "--lora-rank", "16", "--context", "2048")
    t = plan(data)["training"]
    assert plan(data)["preset"] == "qlora"
    per_layer = 16 * ((4096 + 4096) * 2 + (4096 + 1024) * 2 + (4096 + 14336) * 3)
    assert t["trainable_params"] == 32 * per_layer
    assert "Korthikanti" in t["activation_formula"]
    assert t["total_bytes"] == sum(c["size_bytes"] for c in t["components"])
    assert plan(data)["total_bytes"] == plan(data)["weight_bytes"] + t["total_bytes"]
    ckpt = est(cli, "llama3-8b", "--train", "qlora", "--context", "2048", "--grad-checkpointing")
    assert plan(ckpt)["training"]["total_bytes"] < t["total_bytes"]


def test_full_training_bf16_is_12_bytes_per_param_plus_activations(cli):
    data = est(cli, "llama3-8b", "--preset", "bf16", "--train", "full", "--context", "512")
    t = plan(data)["training"]
    grads_and_adam = sum(c["size_bytes"] for c in t["components"] if c["kind"] in ("gradients", "optimizer_state"))
    params = data["model"]["total_params"]
    assert grads_and_adam + plan(data)["weight_bytes"] - 512 == 12 * params  # 512 B of rope buffers


def test_full_training_of_quantized_model_is_bad_input(cli):
    r = cli("estimate", "--model", str(FIXTURES / "llama3-8b.json"), "--preset", "qlora", "--train", "full")
    assert r.code == 2


def test_multi_gpu_split_and_recommendation(cli):
    data = est(cli, "mixtral-8x7b", "--preset", "bf16", "--gpu", "A100-80GB", "--gpus", "2")
    assert plan(data)["fits"] is True
    assert [bool(d["assigned_bytes"]) for d in plan(data)["devices"]] == [True, True]
    assert sum(d["assigned_bytes"] for d in plan(data)["devices"]) == plan(data)["total_bytes"]
    one = est(cli, "mixtral-8x7b", "--preset", "bf16", "--gpu", "A100-80GB")
    assert plan(one)["fits"] is False and plan(one)["offloaded_bytes"] > 0


def test_t4_training_recommends_fp16_qlora(cli):
    data = est(cli, "llama3-8b", "--train", "qlora", "--context", "1024", "--gpu", "T4", "--grad-checkpointing")
    assert data["recommendation"]["preset"] == "nf4-fp16"
    assert any("bf16" in n for n in data["notes"] + data["recommendation"]["notes"])


def test_max_context_that_fits(cli):
    data = est(cli, "llama3-8b", "--preset", "qlora", "--gpu", "7GiB")
    assert 0 < plan(data)["max_context_tokens"] < 8192
    best = plan(data)["max_context_tokens"]
    assert plan(est(cli, "llama3-8b", "--preset", "qlora", "--gpu", "7GiB", "--context", str(best)))["fits"]
    more = est(cli, "llama3-8b", "--preset", "qlora", "--gpu", "7GiB", "--context", str(best + 1))
    assert plan(more)["fits"] is False


def test_moe_experts_stay_unquantized(cli):
    data = est(cli, "mixtral-8x7b", "--preset", "qlora")
    experts = next(c for c in plan(data)["components"] if c["group"] == "moe_experts")
    assert experts["size_bytes"] == 32 * 8 * 3 * 4096 * 14336 * 2
    assert any("MoE" in n for n in data["notes"])


def test_demo_model_name_needs_no_files(cli):
    data = cli("estimate", "--model", "demo", "--preset", "qlora", "--json").json()
    assert data["model"]["model_type"] == "llama" and data["model"]["total_params"] > 0


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
    assert data["model"]["stored_bytes_by_dtype"] == {"BF16": 32}
