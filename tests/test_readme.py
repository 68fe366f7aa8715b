"""README and reality cannot drift (issue 15): every example block in README.md is what the command
prints today (timings aside), and there is no hand-written example output."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import readme_examples as ex  # noqa: E402

README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = ex.readme_blocks(README)


def test_every_example_block_is_generated():
    assert set(BLOCKS) == set(ex.EXAMPLES)
    # No other ```console block: hand-written output would drift.
    assert README.count("```console") == len(BLOCKS)
    for name, body in BLOCKS.items():
        assert body.startswith(f"$ {ex.EXAMPLES[name]}\n"), name


def test_the_first_steps_name_real_make_targets():
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"make ([\w-]+)", README)):
        assert re.search(rf"^{target}:", makefile, re.M), target
    assert "source .venv/bin/activate" in README and "TORCH=torch" in README


def test_no_example_splits_a_number_from_its_unit():
    """At 80 columns a wrapped line never ends in a number whose unit starts the next line."""
    from test_views import UNIT_SPLIT

    for name, body in BLOCKS.items():
        split = UNIT_SPLIT.search(body)
        assert not split, (name, body[max(0, split.start() - 60) : split.end() + 20])


def test_normalize_masks_timings_and_trained_figures_only():
    assert ex.normalize("loaded in 2.14 s │ 6.13 MiB") == ex.normalize("loaded in 12.03 s │ 6.13 MiB")
    assert ex.normalize("load   pass   2.88   6.13 MiB") != ex.normalize("load   pass   2.88   6.14 MiB")
    assert ex.normalize("6.13 MiB") != ex.normalize("6.14 MiB")
    assert ex.normalize("load   pass   2.88   qlora") == ex.normalize("load   pass   12.03   qlora")  # verify
    assert ex.normalize("┡━━━━╇━━┩") == ex.normalize("┡━━━━━━╇━━┩")
    speed = "speed: time.perf_counter\npreset prefill (ms) decode (tokens/s)\nqlora 3.2 (3.2–3.6) {}\n"
    assert ex.normalize(speed.format("356 (356–358)")) == ex.normalize(speed.format("—"))  # decode not timed
    assert ex.normalize(speed.format("356 (356–358)")) != ex.normalize(speed.format("356 (356–358) 9"))
    # Quality figures depend on the CPU that trained the demo: masked; the table's rows and columns are not.
    quality = "quality vs bf16 (built-in sample)\npreset perplexity KL\nqlora {} 0.0065\n"
    assert ex.normalize(quality.format("3.682")) == ex.normalize(quality.format("3.543"))
    assert ex.normalize(quality.format("3.682")) != ex.normalize(quality.format("3.682 98.0%"))
    assert ex.normalize(quality) != ex.normalize(quality.replace("qlora", "nf4"))
    # Memory is exact on every machine, also in compare's memory table.
    memory = "memory: every tensor\npreset memory\nqlora {} MiB\n"
    assert ex.normalize(memory.format("1.98")) != ex.normalize(memory.format("1.99"))


def _check(name: str, cache: Path) -> None:
    fresh = ex.run_example(ex.EXAMPLES[name], env={"QCLI_CACHE": str(cache)})
    assert ex.normalize(BLOCKS[name]) == ex.normalize(fresh), f"run `make readme`; now:\n{fresh}"


@pytest.mark.parametrize("name", sorted(set(ex.EXAMPLES) - ex.LOADING))
def test_readme_example_matches(name, qcli_cache):
    _check(name, qcli_cache)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ex.LOADING))
def test_readme_loading_example_matches(name, qcli_cache):
    _check(name, qcli_cache)


PLANNING = (ROOT / "docs" / "planning.md").read_text(encoding="utf-8")
PLANNING_BLOCKS = re.findall(r"```console\n(.*?)```\n", PLANNING, re.S)


@pytest.mark.parametrize("body", PLANNING_BLOCKS, ids=[b.splitlines()[0][2:60] for b in PLANNING_BLOCKS])
def test_planning_doc_examples_match(body: str) -> None:
    """docs/planning.md's outputs are what qcli prints today (estimate only: no model loads)."""
    command = body.splitlines()[0]
    assert command.startswith("$ qcli estimate "), command
    fresh = ex.run_example(command[2:])
    assert ex.normalize(body) == ex.normalize(fresh), f"re-run the block; now:\n{fresh}"


def _section(title: str) -> str:
    """Return the README's text under `## title`, up to the next `## ` heading."""
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_exit_code_table_is_the_code():
    from qcli.errors import ExitCode

    rows = re.findall(r"^\| ([\d, ]+) \|", _section("Exit codes"), re.M)
    assert {int(c) for row in rows for c in row.split(",")} == {int(c) for c in ExitCode}


SHORT_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def test_the_preset_table_is_configs():
    """README's preset reference says what each configs/*.yaml holds: a hand-written table, so checked."""
    from qcli.plan.presets import presets_report

    rows = {}
    for line in _section("Presets (configs/)").splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in {"name", "---"}:
            rows[cells[0]] = cells[1:]
    presets = {p.name: p for p in presets_report().presets}
    assert set(rows) == set(presets)
    for name, (weights, kept, compute) in rows.items():
        p, bnb = presets[name], presets[name].bitsandbytes_config or {}
        assert SHORT_DTYPES[kept] == p.dtype, name
        assert SHORT_DTYPES[compute.split()[0]] == bnb.get("bnb_4bit_compute_dtype", p.dtype), name
        if bnb.get("load_in_4bit"):
            assert weights.split()[0].strip(",").lower() == bnb["bnb_4bit_quant_type"], name
            assert ("double quant" in weights and "no double" not in weights) == bnb["bnb_4bit_use_double_quant"]
        elif bnb.get("load_in_8bit"):
            assert "LLM.int8" in weights and f"threshold {bnb['llm_int8_threshold']}" in weights, name
        else:
            assert weights == name, name
