"""The shape of the package (issue 9): model/ and plan/ stay free of torch, there are no import
cycles, the error table is ordered, every --json object carries its schema and version."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import typer
from pydantic import BaseModel, ValidationError

from qcli.cli._errors import ERROR_TABLE, outcome_of
from qcli.errors import ExitCode, RunError, UsageError

PACKAGE = Path(__file__).resolve().parents[1] / "qcli"
HEAVY = ("torch", "transformers", "bitsandbytes", "accelerate")


def _modules(sub: str = "") -> list[str]:
    base = PACKAGE / sub if sub else PACKAGE
    out = []
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[-1] == "__main__":
            continue
        out.append(".".join(parts))
    return out


def test_model_and_plan_never_import_heavy_packages_at_module_level():
    modules = _modules("model") + _modules("plan") + _modules("results") + ["qcli.units", "qcli.errors"]
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(json.dumps(sorted({{k.split('.')[0] for k in sys.modules}} & set({list(HEAVY)!r}))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout) == []
    assert len(modules) >= 15  # the check really imported the subpackages


def test_the_check_would_see_a_heavy_import():
    code = "import sys, qcli.run.measure, torch; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "True"


def _edges() -> dict[str, set[str]]:
    """Return qcli's own module-level import graph (imports inside functions are not edges)."""
    known = set(_modules())
    graph: dict[str, set[str]] = {}
    for mod in known:
        rel = Path(*mod.split(".")[1:])
        path = PACKAGE / rel / "__init__.py" if (PACKAGE / rel).is_dir() else PACKAGE / rel.with_suffix(".py")
        tree = ast.parse(path.read_text())
        deps: set[str] = set()
        for node in tree.body:  # module level only
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in known}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    deps.add(sub if sub in known else node.module)
        graph[mod] = {d for d in deps if d in known and d != mod}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return [*stack[stack.index(d) :], d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_command_modules_keep_annotations_evaluated():
    """Typer reads each command's signature on every run: string annotations would be re-evaluated (app.py)."""
    commands = [p for p in sorted((PACKAGE / "cli").glob("*.py")) if not p.name.startswith("_")]
    assert len(commands) >= 7  # app, estimate, load, verify, compare, presets, env
    for path in commands:
        imports = [n for n in ast.parse(path.read_text()).body if isinstance(n, ast.ImportFrom)]
        assert all(n.module != "__future__" for n in imports), path.name


def test_no_import_cycles():
    graph = _edges()
    assert "qcli.plan.estimate" in graph["qcli.run.loader"]  # the graph is really read
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_layers_point_one_way():
    """model/ knows nothing of plan/run/output/cli; plan/ nothing of run/output/cli; run/ nothing of output/cli."""
    forbidden = {
        "qcli.model": ("qcli.plan", "qcli.run", "qcli.output", "qcli.cli"),
        "qcli.plan": ("qcli.run", "qcli.output", "qcli.cli"),
        "qcli.run": ("qcli.output", "qcli.cli"),
        "qcli.output": ("qcli.cli",),
    }
    for mod, deps in _edges().items():
        for layer, banned in forbidden.items():
            if mod.startswith(layer):
                bad = [d for d in deps if d.startswith(banned)]
                assert not bad, f"{mod} imports {bad}"


def test_error_table_lists_subclasses_before_their_bases():
    for i, (later, _) in enumerate(ERROR_TABLE):
        for earlier, _ in ERROR_TABLE[:i]:
            assert not issubclass(later, earlier), f"{later.__name__} is shadowed by {earlier.__name__}"


def test_error_outcomes():
    assert outcome_of(UsageError("bad", "hint")).code == ExitCode.BAD_INPUT
    assert outcome_of(UsageError("bad", "hint")).line() == "Error: bad (hint)"
    assert outcome_of(RunError("failed")).code == ExitCode.FAILED
    assert outcome_of(KeyboardInterrupt()).code == 130

    class Strict(BaseModel):
        n: int

    with pytest.raises(ValidationError) as info:
        Strict.model_validate({"n": "x"})
    validation = outcome_of(info.value)
    assert validation.code == ExitCode.BAD_INPUT and "\n" not in validation.line() and "n:" in validation.line()
    bug = outcome_of(ZeroDivisionError("division by zero"))
    assert bug.code == ExitCode.FAILED
    assert "internal error" in bug.line() and "--debug" in bug.line() and "ZeroDivisionError" in bug.line()
    assert outcome_of(typer.BadParameter("nope")).code == 2


def test_unknown_exception_is_exit_1_not_bad_input(cli, monkeypatch):
    import qcli.plan.estimate as plan_estimate

    def boom(opts):
        raise TypeError("a bug")

    monkeypatch.setattr(plan_estimate, "run_estimate", boom)  # the command imports it when it runs
    r = cli("estimate", "--params", "8b")
    assert r.code == 1
    assert r.err.startswith("Error: internal error") and len(r.err.strip().splitlines()) == 1
    assert "Traceback" not in r.err


@pytest.mark.parametrize(
    "args",
    [
        ("estimate", "--params", "8b", "--json"),
        ("estimate", "--params", "8b", "--bits", "4", "--json"),
        ("estimate", "demo", "--preset", "qlora", "--gpu", "T4", "--json"),
        ("presets", "--json"),
        ("presets", "show", "qlora", "--json"),
        ("presets", "--json", "show", "qlora"),
    ],
)
def test_every_json_is_one_object_with_schema_and_version(cli, args):
    r = cli(*args)
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert isinstance(data, dict)
    assert data["schema_version"] >= 2 and data["qcli_version"] and data["command"] in {"estimate", "presets"}


def test_estimate_json_has_one_shape():
    from qcli.plan.estimate import EstimateOptions, run_estimate

    shapes = {
        tuple(sorted(run_estimate(EstimateOptions(**kw)).model_dump()))
        for kw in (
            {"params": "8b"},
            {"params": "8b", "bits": "4"},
            {"model": "demo", "preset": "qlora", "gpus": ["T4"]},
        )
    }
    assert len(shapes) == 1


def test_numeric_fields_name_their_unit():
    """Every int/float field of the results ends in a unit (or is a count/ratio named as such)."""
    from qcli.results import plan, run

    allowed = ("_bytes", "_params", "_tokens", "_seconds", "_percent", "_ratio", "_size", "_version")
    allowed += ("_per_param", "_per_second", "_gpus", "_nodes")
    counts = {"linear4bit", "linear8bit", "linear_unquantized", "quantizable_linears", "meta_tensors", "lora_rank"}
    counts |= {"outlier_threshold"}  # LLM.int8 threshold: a magnitude of activations, no unit
    counts |= {"perplexity", "top1_agreement", "kl_divergence", "delta_perplexity"}
    counts |= {"min_tokens_per_second", "max_tokens_per_second", "new_tokens", "prefill_min_seconds"}
    models = [m for mod in (plan, run) for m in vars(mod).values() if getattr(m, "__module__", None) == mod.__name__]
    assert len(models) >= 25  # the check really saw the result models
    for model in models:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for name, field in model.model_fields.items():
            ann = field.annotation
            if typing.get_origin(ann) is dict:  # a mapping names its values' unit: params_by_group
                if typing.get_args(ann)[1] in (int, float):
                    assert any(u.strip("_") in name for u in allowed) or name.startswith("linear4bit_by"), name
                continue
            types = set(typing.get_args(ann)) or {ann}
            if types & {int, float}:
                assert name.endswith(allowed) or name in counts, f"{model.__name__}.{name} names no unit"
