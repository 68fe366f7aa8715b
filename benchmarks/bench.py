"""`make bench`: startup of `qcli estimate` against `import torch`, and a compare run on the demo.

Writes docs/bench.md, and docs/bench-hub.md (bench_hub.py: the hub path against a local copy).
Timings are medians of several runs on this machine.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_hub import bench_hub  # benchmarks/ is on sys.path: this file runs as a script

ROOT = Path(__file__).resolve().parents[1]
QCLI = [sys.executable, "-m", "qcli"]
RUNS = 7


def wall(cmd: list[str], runs: int = RUNS, env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT, env=env)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    torch_s = wall([sys.executable, "-c", "import torch"])
    params_s = wall([*QCLI, "estimate", "--params", "8b", "--bits", "4"])
    model_s = wall(
        [
            *QCLI,
            "estimate",
            "--model",
            "tests/fixtures/configs/llama3-8b.json",
            "--preset",
            "qlora",
            "--context",
            "8192",
            "--gpu",
            "T4",
        ]
    )
    # An architecture with no analytic builder (Jamba-v0.1, 52 B, hybrid attention + mamba + MoE): the first
    # estimate builds it on the meta device; later ones read qcli's spec cache.
    jamba = [*QCLI, "estimate", "--model", "tests/fixtures/configs/jamba-v0.1.json", "--preset", "qlora",
             "--context", "8192", "--gpu", "T4"]  # fmt: skip
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "QCLI_CACHE": cache}
        meta_cold_s = wall(jamba, runs=1, env=env)
        meta_warm_s = wall(jamba, env=env)
    subprocess.run(
        [*QCLI, "compare", "demo", "--presets", "bf16,int8,nf4,qlora", "--markdown", "/tmp/qcli-bench.md"],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    lines = [
        "# Benchmarks",
        "",
        f"Machine: {platform.machine()}, {platform.python_version()}, CPU only. "
        f"Medians of {RUNS} runs of a fresh process.",
        "",
        "| command | wall s | vs `import torch` |",
        "|---|---:|---:|",
        f"| `python -c 'import torch'` | {torch_s:.3f} | 1.00 |",
        f"| `qcli estimate --params 8b --bits 4` | {params_s:.3f} | {params_s / torch_s:.2f} |",
        f"| `qcli estimate --model llama3-8b.json --preset qlora --context 8192 --gpu T4` | {model_s:.3f} | "
        f"{model_s / torch_s:.2f} |",
        f"| `qcli estimate --model jamba-v0.1.json …` (meta path, first run) | {meta_cold_s:.3f} | "
        f"{meta_cold_s / torch_s:.2f} |",
        f"| `qcli estimate --model jamba-v0.1.json …` (meta path, spec cache warm) | {meta_warm_s:.3f} | "
        f"{meta_warm_s / torch_s:.2f} |",
        "",
        "## compare on the demo model (CPU)",
        "",
        Path("/tmp/qcli-bench.md").read_text().split("\n", 2)[2],
    ]
    (ROOT / "docs" / "bench.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(bench_hub())
    return 0


if __name__ == "__main__":
    sys.exit(main())
