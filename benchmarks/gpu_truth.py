"""`make gpu-truth`: qcli's CUDA predictions against the GPU, for every preset and model, in a few minutes.

For each preset × model × device count (1, and 2 when the machine has two GPUs) one fresh process
(qcli.run.cuda_probe) loads the model and reports predicted vs measured allocated / reserved bytes, the
load's peak, the CUDA context, the allocator trace replayed through qcli's model of it, load time, and for
a few batch × context points the KV cache (predicted vs measured), prefill time and decode tokens/s.
Writes docs/gpu/<date>-<gpu>.md (and the raw results as .json beside it). Without CUDA: one line, exit 1.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ["fp32", "fp16", "bf16", "int8", "nf4", "fp4", "qlora"]
TIMEOUT_S = 600
MIB = 1 << 20
# Llama-3.2-1B's shape (meta-llama/Llama-3.2-1B config.json), built with random weights; shared with tests/test_gpu.py.
LLAMA_1B_SHAPE: dict[str, Any] = json.loads((ROOT / "tests/fixtures/llama3.2-1b-shape.json").read_text())
BUILD = """
import json, sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
with torch.device("cuda"):
    model = LlamaForCausalLM(LlamaConfig(**json.loads(sys.argv[2]))).to(torch.bfloat16)
model.save_pretrained(sys.argv[1])
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _models(cache: Path) -> list[tuple[str, str, list[list[int]]]]:
    """Return (label, path, kv points) for the demo and the Llama-3.2-1B-shaped model, building them if needed."""
    sys.path.insert(0, str(ROOT))
    from qcli.run.demo import ensure_demo

    llama = cache / "llama-3.2-1b-shape"
    if not (llama / "config.json").exists():
        subprocess.run([sys.executable, "-c", BUILD, str(llama), json.dumps(LLAMA_1B_SHAPE)], check=True, env=_env())
    return [
        ("demo", str(ensure_demo()), [[1, 256], [4, 128]]),
        ("llama-3.2-1b-shape", str(llama), [[1, 1024], [1, 4096], [8, 1024]]),
    ]


def probe(spec: dict[str, Any]) -> dict[str, Any]:
    """Return cuda_probe's result for one load in a fresh process, or {'error': ...}."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "qcli.run.cuda_probe", f.name],
            capture_output=True, text=True, env=_env(), timeout=TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {TIMEOUT_S} s"}
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {**spec, "error": last[:300]}
    return json.loads(proc.stdout)


def versions() -> dict[str, str]:
    import torch

    out = {"python": platform.python_version(), "cuda (torch build)": str(torch.version.cuda)}
    for pkg in ("torch", "transformers", "accelerate", "bitsandbytes", "qcli"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
        )
        out["nvidia driver"] = smi.stdout.strip().splitlines()[0]
    return out


def mib(n: int | None) -> str:
    return "–" if n is None else f"{n / MIB:,.2f}"


def render(results: list[dict[str, Any]], info: dict[str, Any]) -> str:
    """Return the Markdown report."""
    lines = [
        f"# GPU truth: {info['device']} ({info['date']})", "",
        "Produced by `make gpu-truth` (benchmarks/gpu_truth.py). Each row is one load in a fresh process. "
        "Sizes in MiB (2^20 bytes). *Predicted* figures come from qcli.plan (no torch); *measured* ones from "
        "torch.cuda after the load minus before. Reserved is predicted as a range: no load order can reserve less "
        "than the low end; the high end adds one segment per distinct size of the dense weights a quantizing "
        "load frees again. *Replay* feeds the allocator's own trace to qcli's allocator model.", "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + ".",
        f"Device: {info['device']}, {mib(info['total_bytes'])} MiB, {info['device_count']} visible.", "",
        "## Load", "",
        "| model | preset | GPUs | allocated predicted | allocated measured | Δ bytes | reserved predicted (low–high) "
        "| reserved measured | replay allocated/reserved | storages match | peak during load (predicted) "
        "| CUDA context | load s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|",
    ]  # fmt: skip
    for r in results:
        if "error" in r:
            lines.append(f"| {r.get('label')} | {r.get('preset')} | {r.get('devices', 1)} | error: {r['error']} |")
            continue
        p, m, rep = r["predicted"], r["measured"], r.get("replay")
        replay = "–" if rep is None else (
            "exact" if (rep["allocated_bytes"], rep["reserved_bytes"]) == (m["allocated_bytes"], m["reserved_bytes"])
            else f"{mib(rep['allocated_bytes'])} / {mib(rep['reserved_bytes'])}"
        )  # fmt: skip
        lines.append(
            f"| {r['model']} | {r['preset']} | {r['devices']} | {mib(p['allocated_bytes'])} | "
            f"{mib(m['allocated_bytes'])} | {m['allocated_bytes'] - p['allocated_bytes']:+,} | "
            f"{mib(p['reserved_bytes'])} ({mib(p['reserved_low_bytes'])}–{mib(p['reserved_high_bytes'])}) | "
            f"{mib(m['reserved_bytes'])} | {replay} | {'yes' if r.get('storages_match') else 'no'} | "
            f"{mib(m['peak_allocated_bytes'])} ({mib(p['peak_allocated_bytes'])}) | "
            f"{mib(m['cuda_context_bytes'])} | {r['load_seconds']:.2f} |"
        )
    lines += [
        "", "## KV cache and speed", "",
        "| model | preset | GPUs | batch × context | KV predicted | KV measured | prefill peak | prefill s "
        "| decode tok/s |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    method = ""
    for r in results:
        for k in r.get("kv", []):
            method = k["decode_method"]
            lines.append(
                f"| {r['model']} | {r['preset']} | {r['devices']} | {k['batch']} × {k['context_tokens']} | "
                f"{mib(k['kv_predicted_allocated_bytes'])} | {mib(k['kv_measured_bytes'])} | "
                f"{mib(k['prefill_peak_bytes'])} | {k['prefill_seconds']:.4f} | {k['decode_tokens_per_second']:.1f} |"
            )
    if method:
        lines += ["", f"Decode tokens/s: {method}; batch × new tokens over the decode time."]
    return "\n".join(lines) + "\n"


def main() -> int:
    try:
        import torch
    except ImportError:
        print("gpu-truth: torch is not installed: nothing measured", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("gpu-truth: no CUDA GPU here (torch.cuda.is_available() is False): nothing measured", file=sys.stderr)
        return 1
    cache = Path(os.environ.get("QCLI_CACHE", Path.home() / ".cache" / "qcli")) / "gpu-truth"
    models = _models(cache)
    counts = [1, 2] if torch.cuda.device_count() >= 2 else [1]
    results = []
    for label, path, kv in models:
        for preset in PRESETS:
            for devices in counts:
                # KV points on one GPU only: the probe measures the first parameter's device
                points = kv if devices == 1 else []
                spec = {"model": path, "label": label, "preset": preset, "devices": devices, "kv_points": points}
                result = probe(spec)
                if "measured_storages" in result:  # keep the record small: whether the lists matched is enough
                    result["storages_match"] = result.pop("measured_storages") == result.pop("predicted_storages")
                results.append(result)
                print(f"{label} {preset} x{devices}: {result.get('error') or 'ok'}", file=sys.stderr)
    props = torch.cuda.get_device_properties(0)
    info = {
        "date": dt.date.today().isoformat(),
        "device": props.name,
        "total_bytes": props.total_memory,
        "device_count": torch.cuda.device_count(),
        "versions": versions(),
    }
    out = ROOT / "docs" / "gpu" / f"{info['date']}-{re.sub(r'[^a-z0-9]+', '-', props.name.lower()).strip('-')}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(render(results, info))
    out.with_suffix(".json").write_text(json.dumps({"info": info, "results": results}, indent=1))
    print(f"wrote {out.with_suffix('.md').relative_to(ROOT)}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
