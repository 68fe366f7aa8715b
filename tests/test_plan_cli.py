"""`qcli estimate` as a user meets the plan (issue 14): one verdict, honest limits, training defaults,
strategies across GPUs, `--gpus auto` — through the real CLI."""

from __future__ import annotations

import pytest

from tests.conftest import FIXTURES, plan
from tests.test_estimate_cli import _imported_modules

LLAMA = str(FIXTURES / "llama3-8b.json")
LLAMA70 = str(FIXTURES / "llama3-70b.json")


def est(cli, *args: str) -> dict:
    r = cli("estimate", *args, "--json")
    assert r.code == 0, r.err
    return r.json()


def test_long_context_on_a_t4_one_verdict_and_the_binding_limit(cli):
    data = est(cli, LLAMA, "--preset", "qlora", "--gpu", "T4", "--context", "100000")
    p = plan(data)
    assert p["fits"] is False and p["verdict"] == "does_not_fit"
    assert [r["fits"] for r in p["devices"]] == [False]  # never "fits: yes" beside "does not fit"
    assert p["context_limit_tokens"] == 8192 and p["max_context_tokens"] > 8192
    assert p["context_binding"] == "model"
    assert any("exceeds the model's own limit" in n for n in data["notes"])
    table = cli("estimate", LLAMA, "--preset", "qlora", "--gpu", "T4", "--context", "100000").out
    assert "does not fit: T4 needs" in table and "the model limit binds" in table


def test_without_context_the_kv_cache_is_said_to_be_out_of_the_fit(cli):
    data = est(cli, LLAMA, "--preset", "qlora", "--gpu", "T4")
    assert plan(data)["kv_in_fit"] is False
    assert any("KV cache is not in the fit" in n for n in data["notes"])
    assert plan(data)["max_context_tokens"] > 0 and plan(data)["max_batch_size"] is None


def test_max_batch_is_the_largest_that_fits(cli):
    p = plan(est(cli, LLAMA, "--preset", "qlora", "--gpu", "24GB", "--context", "8192"))
    best = p["max_batch_size"]
    assert best and best > 1
    assert plan(est(cli, LLAMA, "--preset", "qlora", "--gpu", "24GB", "--context", "8192", "--batch", str(best)))[
        "fits"
    ]
    more = est(cli, LLAMA, "--preset", "qlora", "--gpu", "24GB", "--context", "8192", "--batch", str(best + 1))
    assert plan(more)["fits"] is False


def test_bare_params_names_its_block_once_and_cpu_questions_have_no_cuda_context(cli):
    table = cli("estimate", "--params", "8b", "--bits", "4", "--gpu", "T4").out
    assert "all_parameters … all_parameters" not in table and "embeddings … embeddings" not in table
    data = est(cli, "--params", "8b", "--bits", "4")
    assert [c["kind"] for c in plan(data)["overheads"]] == ["allocator_margin"]
    with_gpu = est(cli, "--params", "8b", "--bits", "4", "--gpu", "T4")
    assert "cuda_context" in [c["kind"] for c in plan(with_gpu)["overheads"]]


def test_qlora_follows_peft_defaults(cli):
    p = plan(est(cli, LLAMA, "--train", "qlora", "--context", "2048"))
    t = p["training"]
    assert t["kbit_prepared"] and t["gradient_checkpointing"] is True
    assert "checkpointing" in t["activation_formula"]
    assert t["upcast_params"] == 2 * 128256 * 4096 + 65 * 4096  # embeddings, lm_head, 65 norms -> fp32
    kept = {(c["group"], c["dtype"]) for c in p["components"] if c["kind"] == "weights"}
    assert ("embeddings", "float32") in kept and ("lm_head", "float32") in kept
    logits = next(c for c in t["components"] if c["kind"] == "logits")
    assert logits["size_bytes"] == 2048 * 128256 * 4
    assert all(c["formula"] for c in t["components"])


def test_full_fine_tune_without_a_preset_uses_the_checkpoint_dtype(cli):
    p = plan(est(cli, LLAMA, "--train", "full"))
    assert p["preset"] == "bf16" and p["training"]["mode"] == "full"


def test_master_weights_add_four_bytes_per_param(cli):
    plain = plan(est(cli, LLAMA, "--train", "full", "--context", "512"))
    master = plan(est(cli, LLAMA, "--train", "full", "--context", "512", "--master-weights"))
    assert master["total_bytes"] - plain["total_bytes"] == 4 * 8_030_261_248


def test_zero3_across_gpus_and_nodes(cli):
    one = plan(est(cli, LLAMA70, "--train", "full", "--gpu", "H100", "--gpus", "8", "--strategy", "zero3"))
    two = plan(
        est(cli, LLAMA70, "--train", "full", "--gpu", "H100", "--gpus", "8", "--nodes", "2", "--strategy", "zero3")
    )
    assert one["training"]["total_gpus"] == 8 and two["training"]["total_gpus"] == 16
    gpu_one, gpu_two = one["devices"][0], two["devices"][0]
    assert gpu_one["identical_gpus"] == 8 and gpu_two["required_bytes"] < gpu_one["required_bytes"]
    host = one["devices"][-1]
    assert host["role"] == "host" and host["fits"] is None  # no --cpu-memory: unknown, not assumed


def test_offload_flags_move_states_to_the_cpu(cli):
    args = (LLAMA70, "--train", "full", "--gpu", "H100", "--gpus", "8", "--strategy", "zero3")
    plain = plan(est(cli, *args))
    off = plan(est(cli, *args, "--offload-optimizer", "--cpu-memory", "2TiB"))
    assert off["devices"][0]["required_bytes"] < plain["devices"][0]["required_bytes"]
    assert {c["kind"] for c in off["components"] if c["device"] == "cpu"} >= {"optimizer_state", "master_weights"}
    assert off["devices"][-1]["fits"] is True


@pytest.mark.parametrize(
    "args",
    [
        ["--strategy", "zero3"],  # training flags without --train
        ["--train", "full", "--gpu", "H100", "--gpus", "2", "--strategy", "zero9"],
        ["--train", "full", "--gpu", "H100", "--gpus", "2", "--strategy", "ddp", "--offload-optimizer"],
        ["--train", "full", "--gpu", "H100", "--gpus", "2", "--strategy", "zero2", "--offload-params"],
        ["--gpu", "H100", "--gpus", "many"],
        ["--gpu", "H100", "--gpus", "2", "--max-memory", "0=20GiB"],
        ["--gpu", "H100", "--device-map", "diagonal"],
    ],
)
def test_bad_distributed_flags_exit_2(cli, args):
    r = cli("estimate", LLAMA, "--preset", "bf16", *args)
    assert r.code == 2, r.out
    assert r.err.startswith("Error: ") and len(r.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--gpu", "T4", "--cpu-memory", "64GiB"], "nothing here offloads"),  # one GPU, no device map
        (["--gpu", "T4", "--train", "qlora", "--cpu-memory", "64GiB"], "nothing here offloads"),
        (["--gpu", "T4", "--gpus", "1", "--cpu-memory", "64GiB"], "nothing here offloads"),
        (["--gpu", "H100", "--gpus", "2", "--train", "full", "--strategy", "ddp", "--cpu-memory", "1TiB"], "offload"),
        (["--gpu", "1b"], "1 byte, too small"),  # a unit slip: b is bytes
        (["--gpu", "512KiB"], "524,288 bytes"),
        (["--gpu", "T4", "--device-map", "auto", "--cpu-memory", "24b"], "--cpu-memory '24b' is 24 bytes"),
    ],
)
def test_host_budget_that_changes_nothing_and_byte_sized_devices_exit_2(cli, args, said):
    r = cli("estimate", LLAMA, "--preset", "bf16", *args)
    assert r.code == 2, r.out
    assert said in r.err and len(r.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["--gpu", "T4", "--device-map", "auto", "--cpu-memory", "64GiB"],  # what does not fit goes to the CPU
        ["--gpu", "T4", "--gpus", "2", "--cpu-memory", "64GiB"],  # a map over two GPUs
        ["--gpu", "H100", "--train", "full", "--strategy", "zero3", "--cpu-memory", "1TiB"],
        ["--gpu", "1MiB", "--device-map", "auto", "--cpu-memory", "1MiB"],  # the smallest device size taken
    ],
)
def test_host_budget_is_taken_where_a_plan_has_a_cpu_row(cli, args):
    budget = args[args.index("--cpu-memory") + 1]
    data = est(cli, LLAMA70, "--preset", "bf16", *args)
    cpu = [d for p in data["plans"] for d in p["devices"] if d["kind"] == "cpu"]
    assert cpu and all(d["capacity_bytes"] == {"64GiB": 64, "1TiB": 1024, "1MiB": 2**-10}[budget] * 2**30 for d in cpu)


def test_how_many_gpus(cli):
    data = est(cli, LLAMA70, "--train", "qlora", "--gpu", "RTX 4090", "--gpus", "auto", "--context", "1024")
    needed = {g["strategy"]: g["total_gpus"] for g in data["gpus_needed"]}
    assert needed["ddp"] is None  # a replicated 70B base never fits a 24 GB card
    assert needed["zero3"] and needed["fsdp"]
    p = plan(data)
    assert p["fits"] and p["training"]["total_gpus"] == min(n for n in needed.values() if n)
    fewer = est(
        cli,
        LLAMA70,
        "--train",
        "qlora",
        "--gpu",
        "RTX 4090",
        "--gpus",
        str(p["training"]["total_gpus"] - 1),
        "--strategy",
        p["training"]["strategy"],
        "--context",
        "1024",
    )
    assert plan(fewer)["fits"] is False


def test_recommendation_ranks_what_fits_cheapest_first(cli):
    rec = est(cli, LLAMA, "--gpu", "A100-80GB", "--context", "8192")["recommendation"]
    assert rec["preset"] == "bf16"
    fitting = [o["required_bytes"] for o in rec["options"] if o["fits"]]
    assert fitting == sorted(fitting) and len(fitting) == 3
    tight = est(cli, LLAMA, "--gpu", "T4", "--context", "8192")["recommendation"]
    assert all(o["why_not"] for o in tight["options"] if not o["fits"])


def test_multi_gpu_training_plan_never_imports_torch():
    args = (
        "estimate",
        "--model",
        LLAMA70,
        "--train",
        "qlora",
        "--gpu",
        "RTX 4090",
        "--gpus",
        "2",
        "--strategy",
        "fsdp",
        "--offload-params",
    )
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in _imported_modules(*args).splitlines()
        if line.startswith("import time:")
    }
    assert "qcli" in imported and not imported & {"torch", "transformers", "bitsandbytes", "accelerate"}


def test_activation_formulas(cli):
    def acts(*extra: str) -> int:
        t = plan(est(cli, LLAMA, "--train", "lora", "--context", "1024", *extra))["training"]
        return next(c["size_bytes"] for c in t["components"] if c["kind"] == "activations")

    s, h, a, layers = 1024, 4096, 32, 32
    assert acts() == layers * int(s * h * (34 + 5 * a * s / h))  # Korthikanti et al., no recomputation
    assert acts("--attention", "sdpa") == layers * s * h * 34
    assert acts("--grad-checkpointing") == layers * 2 * s * h + int(s * h * (34 + 5 * a * s / h))
    assert acts("--mixed-precision", "no") == 2 * acts()


@pytest.mark.parametrize(
    ("preset", "gpu", "caveat"),
    [
        ("qlora", "T4", True),
        ("bf16", "V100-32GB", True),
        ("nf4-fp16", "T4", False),
        ("fp16", "V100-32GB", False),
        ("qlora", "A100-80GB", False),
    ],
)
def test_the_answer_says_when_the_gpu_lacks_the_bf16_the_plan_uses(cli, preset, gpu, caveat):
    r = cli("estimate", LLAMA, "--preset", preset, "--gpu", gpu)
    first = " ".join(r.out.split("\n\n")[0].split())  # the answer, however it wraps
    assert r.code == 0 and "fits" in first
    assert (f"but the {gpu} has no bf16" in first) is caveat
    assert (
        plan(est(cli, LLAMA, "--preset", preset, "--gpu", gpu))["compute_dtype"]
        == ({"qlora": "bfloat16", "bf16": "bfloat16", "nf4-fp16": "float16", "fp16": "float16"}[preset])
    )


def test_a_mistyped_path_into_a_local_folder_is_not_sent_to_the_hub(cli, tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: a hub call would say unreachable
    r = cli("estimate", "models/llama")
    assert r.code == 2 and "no such file or directory, though there is a local folder models/" in r.err
    assert "https://huggingface.co/models/llama" in r.err and "reach" not in r.err


def test_every_plan_says_its_compute_dtype(cli):
    plans = est(cli, LLAMA)["plans"]  # the comparison table: no preset
    assert {p["format"]: p["compute_dtype"] for p in plans} == {
        "fp32": "float32", "bf16": "bfloat16", "int8": "bfloat16", "nf4": None, "nf4+dq": None,
    }  # fmt: skip
