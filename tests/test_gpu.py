"""On a CUDA GPU: what qcli predicts for the allocator counters against what torch.cuda reports.

Every load runs in a process of its own (qcli.run.cuda_probe) so that it meets a fresh caching allocator.
Skipped without CUDA; `make smoke` runs them. The test process itself never creates a CUDA context.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

MIB = 1 << 20
PRESETS = ["fp32", "fp16", "bf16", "int8", "nf4", "fp4", "qlora"]
ROOT = Path(__file__).resolve().parents[1]

# Llama-3.2-1B's shape (meta-llama/Llama-3.2-1B config.json), with random weights built here.
LLAMA_1B_SHAPE: dict[str, Any] = json.loads((Path(__file__).parent / "fixtures/llama3.2-1b-shape.json").read_text())

BUILD = """
import json, sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
config = LlamaConfig(**json.loads(sys.argv[2]))
with torch.device("cuda"):
    model = LlamaForCausalLM(config).to(torch.bfloat16)
model.save_pretrained(sys.argv[1])
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def probe(tmp_path: Path, model: str, preset: str, **extra: Any) -> dict[str, Any]:
    """Return qcli.run.cuda_probe's result for one load, run in a fresh process."""
    spec = tmp_path / f"{Path(model).name}-{preset}.json"
    spec.write_text(json.dumps({"model": model, "preset": preset, **extra}))
    proc = subprocess.run(
        [sys.executable, "-m", "qcli.run.cuda_probe", str(spec)], capture_output=True, text=True, env=_env()
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="session")
def demo_path(qcli_cache: Path) -> str:
    from qcli.run.demo import ensure_demo

    with pytest.MonkeyPatch.context() as mp:  # the same cache dir the CLI subprocesses get from conftest
        mp.setenv("QCLI_CACHE", str(qcli_cache))
        return str(ensure_demo())


@pytest.fixture(scope="session")
def llama_1b_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("llama-1b-shape")
    subprocess.run([sys.executable, "-c", BUILD, str(out), json.dumps(LLAMA_1B_SHAPE)], check=True, env=_env())
    return str(out)


def check_load(result: dict[str, Any]) -> None:
    pred, meas = result["predicted"], result["measured"]
    label = f"{result['model']} {result['preset']}"
    # The storage list first: a mismatch here explains any mismatch below.
    assert result["measured_storages"] == result["predicted_storages"], label
    assert meas["allocated_bytes"] == pred["allocated_bytes"], label
    assert pred["reserved_low_bytes"] <= meas["reserved_bytes"] <= pred["reserved_high_bytes"], (label, pred, meas)
    # The allocator rules on the load's real alloc/free trace: exact, whatever the load allocated on the way.
    replay = result["replay"]
    assert replay["allocated_bytes"] == meas["allocated_bytes"], (label, replay)
    assert replay["reserved_bytes"] == meas["reserved_bytes"] == replay["trace_segment_bytes"], (label, replay)
    assert replay["peak_allocated_bytes"] == meas["peak_allocated_bytes"], (label, replay)
    assert meas["cuda_context_bytes"] > 0


@pytest.mark.parametrize("preset", PRESETS)
def test_demo_allocated_equals_prediction(tmp_path, demo_path, preset):
    check_load(probe(tmp_path, demo_path, preset, label="demo"))


@pytest.mark.parametrize("preset", PRESETS)
def test_llama_1b_shape_allocated_equals_prediction(tmp_path, llama_1b_path, preset):
    result = probe(tmp_path, llama_1b_path, preset, label="llama-3.2-1b-shape", kv_points=[[1, 2048], [4, 512]])
    check_load(result)
    for point in result["kv"]:
        # K and V per layer as transformers' DynamicCache stores them, each block rounded to 512 bytes; a block
        # carved from a cached free block may also take that block's rest of <= 1 MiB (should_split).
        low = point["kv_predicted_allocated_bytes"]
        assert low <= point["kv_measured_bytes"] <= low + point["kv_tensors"] * MIB, point
        assert point["decode_tokens_per_second"] > 0


def _qcli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qcli", *args], capture_output=True, text=True, env=_env())


@pytest.mark.parametrize("preset", PRESETS)
def test_verify_passes_on_cuda(tmp_path, demo_path, preset):
    proc = _qcli("verify", "demo", "--preset", preset, "--device", "cuda", "--junit", str(tmp_path / "v.xml"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "v.xml").read_text().count("<failure") == 0


def test_compare_runs_on_cuda(tmp_path, demo_path):
    proc = _qcli("compare", "demo", "--device", "cuda", "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(proc.stdout)
    text = json.dumps(rows)
    assert "tokens_per_second" in text and "prefill_seconds" in text


@pytest.mark.parametrize("preset", ["bf16", "qlora"])
def test_qcli_load_reports_prediction_beside_measurement(tmp_path, demo_path, preset):
    proc = _qcli("load", "demo", "--preset", preset, "--device", "cuda", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    measured, predicted = data["cuda"][0], data["cuda_prediction"]
    assert measured["allocated_bytes"] == predicted["cuda_allocated_bytes"]
    assert predicted["cuda_reserved_low_bytes"] <= measured["reserved_bytes"] <= predicted["cuda_reserved_high_bytes"]
    # The measured context feeds a later estimate.
    path = tmp_path / "load.json"
    path.write_text(proc.stdout)
    est = _qcli(
        "estimate", "--model", "demo", "--preset", preset, "--gpu", "80GiB", "--cuda-context", str(path), "--json"
    )
    assert est.returncode == 0, est.stderr
    context = json.loads(est.stdout)["plans"][0]["overheads"][0]
    assert context["size_bytes"] == measured["cuda_context_bytes"] and context["source"] == "measured (load.json)"
