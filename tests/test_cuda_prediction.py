"""The predicted torch.cuda counters in `qcli estimate` / `qcli load`, and `--cuda-context FROM.json`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FIXTURES, plan

from qcli.model.describe import from_config
from qcli.plan.allocator import allocated_lower_bound
from qcli.plan.formats import NF4_DQ
from qcli.plan.storages import cuda_prediction, model_storages, process_storages

LLAMA = str(FIXTURES / "llama3-8b.json")


def test_estimate_json_carries_the_prediction_and_the_context_line(cli):
    r = cli("estimate", "--model", LLAMA, "--preset", "qlora", "--json")
    assert r.code == 0, r.err
    p = plan(r.json())
    pred = p["cuda_prediction"]
    spec = from_config(json.loads(Path(LLAMA).read_text()))
    assert pred == cuda_prediction(spec, NF4_DQ, "bfloat16").model_dump()
    # allocated counts each storage rounded up to 512 bytes (+ the cached bitsandbytes map), and a large block
    # carved with <= 1 MiB left over whole
    storages = [s.nbytes for s in [*model_storages(spec, NF4_DQ, "bfloat16"), *process_storages(NF4_DQ)]]
    assert p["weight_bytes"] == sum(storages) - 1024
    large = sum(1 for n in storages if n > 2**20)
    assert (
        allocated_lower_bound(storages)
        <= pred["cuda_allocated_bytes"]
        <= allocated_lower_bound(storages) + large * 2**20
    )
    assert pred["cuda_reserved_low_bytes"] <= pred["cuda_reserved_bytes"] <= pred["cuda_reserved_high_bytes"]
    assert "prediction" not in pred  # it is labelled by its field name and description, not a flag
    # No --gpu: a CPU-side question, so the overheads hold no CUDA context (the prediction excludes it too)
    assert [o["kind"] for o in p["overheads"]] == ["allocator_margin"]


def test_estimate_text_shows_the_prediction(cli):
    r = cli("estimate", "--model", LLAMA, "--preset", "nf4")
    assert r.code == 0, r.err
    assert "predicted torch.cuda after loading the weights on one GPU" in r.out


def test_no_prediction_without_tensor_shapes_or_for_several_gpus(cli):
    assert plan(cli("estimate", "--params", "7b", "--bits", "4", "--json").json())["cuda_prediction"] is None
    r = cli("estimate", "--model", LLAMA, "--preset", "qlora", "--gpu", "T4", "--gpus", "2", "--json")
    assert plan(r.json())["cuda_prediction"] is None
    one = plan(cli("estimate", "--model", LLAMA, "--bits", "4", "--gpu", "T4", "--json").json())
    assert one["cuda_prediction"] is not None


def _load_json(tmp_path, cuda: list[dict] | None):
    path = tmp_path / "load.json"
    path.write_text(json.dumps({"schema_version": 1, "command": "load", "device": "cuda:0", "cuda": cuda}))
    return path


def test_cuda_context_from_an_earlier_load(cli, tmp_path):
    measured = [{"device": "cuda:0", "cuda_context_bytes": 523_239_424}, {"device": "cuda:1", "cuda_context_bytes": 5}]
    path = _load_json(tmp_path, measured)
    r = cli("estimate", "--model", LLAMA, "--preset", "qlora", "--gpu", "T4", "--cuda-context", str(path), "--json")
    assert r.code == 0, r.err
    context = plan(r.json())["overheads"][0]
    assert context == {**context, "kind": "cuda_context", "size_bytes": 523_239_424, "source": "measured (load.json)"}
    text = cli("estimate", "--model", LLAMA, "--preset", "qlora", "--gpu", "T4", "--cuda-context", str(path))
    assert "CUDA context (measured (load.json)" in text.out


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "no such file"),
        ("not json", "not a JSON file"),
        (json.dumps({"command": "estimate"}), "not the output of `qcli load --json`"),
        (json.dumps({"command": "load", "cuda": None}), "measured no CUDA context"),
        (json.dumps({"command": "load", "cuda": [{"cuda_context_bytes": "lots"}]}), "must be byte counts"),
    ],
)
def test_cuda_context_file_errors_are_bad_input(cli, tmp_path, content, needle):
    path = tmp_path / "ctx.json"
    if content is not None:
        path.write_text(content)
    r = cli("estimate", "--model", LLAMA, "--cuda-context", str(path))
    assert r.code == 2
    assert needle in r.err


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> str:
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    out = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    return str(out)


@pytest.mark.slow
def test_a_cpu_load_json_has_no_context_to_reuse(cli, tmp_path, tiny_checkpoint):
    r = cli("load", tiny_checkpoint, "--preset", "bf16", "--device", "cpu", "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert data["cuda"] is None and data["cuda_prediction"] is None  # figures that only exist on a GPU: absent
    path = tmp_path / "cpu-load.json"
    path.write_text(r.out)
    bad = cli("estimate", "--model", tiny_checkpoint, "--cuda-context", str(path))
    assert bad.code == 2 and "measured no CUDA context" in bad.err
