"""Regenerate the example outputs in README.md and docs/planning.md (`make readme`), or check them (`--check`).

Every example block in the README is marked `<!-- example: NAME -->` and holds `$ qcli …` followed by
what that command prints at 80 columns, produced by running it here. tests/test_readme.py runs the
same commands and compares, tolerant only of timings, so the README and qcli cannot drift apart.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PLANNING = ROOT / "docs" / "planning.md"  # its examples are regenerated too (`make readme`)
WIDTH = 80
# name -> the command line, as a reader types it from the repository root (after `source .venv/bin/activate`).
EXAMPLES: dict[str, str] = {
    "estimate-params": "qcli estimate --params 8b --bits 4",
    "estimate-llama": "qcli estimate tests/fixtures/configs/llama3-8b.json --preset qlora --context 8192 --gpu T4",
    "estimate-table": "qcli estimate tests/fixtures/configs/llama3-8b.json --gpu L4",
    "gpu-typo": "qcli estimate --params 8b --gpu 4090",
    "estimate-offload": (
        "qcli estimate tests/fixtures/configs/mixtral-8x7b.json --preset qlora --gpu 'RTX 4090' --gpus 2 "
        "--device-map auto --context 4096"
    ),
    "estimate-train": "qcli estimate tests/fixtures/configs/llama3-8b.json --train qlora --context 2048 --gpu T4",
    "estimate-gpus-auto": (
        "qcli estimate tests/fixtures/configs/llama3-70b.json --train full --gpu H100 --gpus auto "
        "--grad-checkpointing --attention sdpa --context 4096"
    ),
    "presets": "qcli presets",
    "verify": "qcli verify demo --preset qlora --expect Paris",
    "compare": "qcli compare demo",
}
# The examples that load a model (seconds each); the rest are instant.
LOADING = frozenset({"verify", "compare"})
BLOCK = re.compile(r"<!-- example: (?P<name>[\w-]+) -->\n```console\n(?P<body>.*?)```\n", re.S)


def run_example(command: str, env: dict[str, str] | None = None) -> str:
    """Return `$ command` and everything it prints (stdout, then stderr) at 80 columns, without colour."""
    args = shlex.split(command)
    assert args[0] == "qcli"
    full_env = {**os.environ, **(env or {}), "COLUMNS": str(WIDTH), "NO_COLOR": "1", "TERM": "dumb"}
    full_env.setdefault("HF_HUB_OFFLINE", "1")
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", "qcli", *args[1:]], capture_output=True, text=True, env=full_env, cwd=ROOT
    )
    lines = [line.rstrip() for line in (proc.stdout + proc.stderr).splitlines()]
    return "\n".join([f"$ {command}", *lines]) + "\n"


def readme_blocks(text: str) -> dict[str, str]:
    """Return the README's example blocks by name."""
    return {m["name"]: m["body"] for m in BLOCK.finditer(text)}


def normalize(text: str) -> str:
    """Return the text with timings masked and table padding collapsed (timings change column widths)."""
    out, in_speed, in_quality = [], False, False
    for line in text.splitlines():
        if line.startswith("speed:"):
            in_speed = True
        elif line.startswith("quality vs"):
            in_quality = True
        elif not line.strip():
            in_speed = in_quality = False
        if in_speed and not line.startswith(("speed:", "preset")):
            line = re.sub(r"\d[\d,.]*", "<t>", line)  # the speed table is all timings
            # a run whose decode could not be timed (a busy CPU) shows "—" for its median (min–max)
            line = re.sub(r"<t> \(<t>–<t>\)|—", "<t>", line)
        if in_quality and not line.startswith(("quality", "preset")):
            # The demo is trained in float32 on the CPU for a few seconds: another CPU's kernels sum in
            # another order and train other weights (same versions and seed: bf16 perplexity 3.685 on an
            # Intel CI machine, 3.543 on an AMD EPYC). The table's layout is checked, not its figures.
            line = re.sub(r"[-+]?\d+(\.\d+)?%?", "<q>", line)
        line = re.sub(r"\d[\d,]*(\.\d+)?(?= ?(s|ms)\b)", "<t>", line)  # "1.68 s", "loaded in 2.14 s"
        line = re.sub(r"^(\w+\s+(?:pass|FAIL|warn|skip|ERROR)\s+)\d+\.\d+", r"\1<t>", line)  # verify's seconds
        line = re.sub(r"([─━═])\1+", r"\1", line)  # rules and borders widen with their columns
        out.append(" ".join(line.split()))
    return "\n".join(out)


def regenerate(names: list[str]) -> int:
    missing = set(names) - set(readme_blocks(README.read_text(encoding="utf-8")))
    if missing:
        print(f"README.md has no block for {sorted(missing)}", file=sys.stderr)
        return 1
    outputs = {}
    for name in names:
        print(f"running {name}: {EXAMPLES[name]}", file=sys.stderr)
        outputs[name] = run_example(EXAMPLES[name])

    def replace(m: re.Match[str]) -> str:
        body = outputs.get(m["name"])
        return m.group(0) if body is None else f"<!-- example: {m['name']} -->\n```console\n{body}```\n"

    text = README.read_text(encoding="utf-8")  # read again: the README may have been edited meanwhile
    README.write_text(BLOCK.sub(replace, text), encoding="utf-8")
    if set(names) == set(EXAMPLES):
        regenerate_planning()
    return 0


def regenerate_planning() -> None:
    """Re-run every `$ qcli estimate …` block of docs/planning.md (each block holds its own command line)."""

    def rerun(m: re.Match[str]) -> str:
        command = m.group(1).splitlines()[0].removeprefix("$ ")
        print(f"running docs/planning.md: {command}", file=sys.stderr)
        return f"```console\n{run_example(command)}```\n"

    text = PLANNING.read_text(encoding="utf-8")
    PLANNING.write_text(re.sub(r"```console\n(.*?)```\n", rerun, text, flags=re.S), encoding="utf-8")


def check(names: list[str]) -> int:
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    bad = [n for n in names if normalize(blocks.get(n, "")) != normalize(run_example(EXAMPLES[n]))]
    for n in bad:
        print(f"README example {n!r} differs from `{EXAMPLES[n]}`: run `make readme`", file=sys.stderr)
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of rewriting README.md")
    parser.add_argument("names", nargs="*", help=f"examples to run (default all): {', '.join(EXAMPLES)}")
    args = parser.parse_args()
    names = args.names or list(EXAMPLES)
    unknown = set(names) - set(EXAMPLES)
    if unknown:
        parser.error(f"unknown examples {sorted(unknown)}")
    return check(names) if args.check else regenerate(names)


if __name__ == "__main__":
    sys.exit(main())
