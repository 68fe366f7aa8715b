"""The wheel, installed without the `load` extra into a fresh venv that cannot import torch (issue 15):
estimate, presets and env work; load, verify, compare and estimate's meta-device path exit 2 with one
line naming `pip install 'qcli[load]'`. The configs ship inside the wheel (issue 9).

The fresh venv sees only the distributions qcli's wheel declares as core dependencies (and theirs),
through a folder of symlinks: torch, transformers, accelerate and bitsandbytes are really absent.
"""

from __future__ import annotations

import email
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "configs"
HINT = "pip install 'qcli[load]'"
# The fresh venv must see only itself: no PYTHONPATH pointing at this checkout.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}


def _core_requirements(wheel: Path) -> list[str]:
    """Return the wheel's Requires-Dist names that no extra guards (its core dependencies)."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        msg = email.message_from_bytes(zf.read(meta))
    reqs = [r for r in msg.get_all("Requires-Dist") or [] if "extra ==" not in r]
    return [re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0] for r in reqs]


def _closure(names: list[str]) -> list[md.Distribution]:
    """Return the installed distributions of `names` and of everything they require (no extras)."""
    seen: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:  # a marker-guarded dependency of another platform/Python
            continue
        seen[key] = dist
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            if ";" in req and not _marker_true(req.split(";", 1)[1]):
                continue
            todo.append(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0])
    return list(seen.values())


def _marker_true(marker: str) -> bool:
    try:
        from packaging.markers import Marker
    except ImportError:  # pragma: no cover - packaging comes with pip's tooling
        return True
    return Marker(marker).evaluate()


def _link_distributions(dists: list[md.Distribution], target: Path) -> None:
    """Symlink each distribution's top-level files (packages, modules, dist-info) into `target`."""
    target.mkdir(parents=True)
    for dist in dists:
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops - {"__pycache__"}:
            src = Path(str(dist.locate_file(top)))
            if src.exists() and not (target / top).exists():
                (target / top).symlink_to(src)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """Return the bin/ of a fresh venv holding the built wheel and only its core dependencies."""
    tmp = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp / "dist").glob("qcli-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"qcli/configs/qlora.yaml", "qcli/configs/gpus.yaml", "qcli/data/sample.txt"} <= names
    assert "qcli/cli/app.py" in names and "qcli/model/spec.py" in names
    core = _core_requirements(wheel)
    assert "typer" in core and not {"torch", "transformers", "accelerate", "bitsandbytes"} & set(core)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(subprocess.run(
        [venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, env=CLEAN_ENV,
    ).stdout.strip())  # fmt: skip
    deps = tmp / "core-deps"
    _link_distributions(_closure(core), deps)
    (purelib / "core-deps.pth").write_text(f"{deps}\n")
    subprocess.run(
        [*pip, "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        env=CLEAN_ENV,
    )
    assert (venv / "bin" / "qcli").is_file()
    return venv / "bin"


def _run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "NO_COLOR": "1", "HF_HUB_OFFLINE": "1", "QCLI_CACHE": str(cwd / "c")}
    return subprocess.run([str(bin_dir / "qcli"), *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_the_fresh_venv_really_has_no_loading_stack(installed, tmp_path):
    heavy = ("torch", "transformers", "accelerate", "bitsandbytes")
    code = f"import importlib.util as u; print([m for m in {heavy!r} if u.find_spec(m)])"
    out = subprocess.run(
        [installed / "python", "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path, env=CLEAN_ENV
    )
    assert out.stdout.strip() == "[]"
    imports = "import typer, rich, pydantic, yaml"
    core = subprocess.run([installed / "python", "-c", imports], cwd=tmp_path, env=CLEAN_ENV)
    assert core.returncode == 0


def test_installed_wheel_reads_its_own_configs(installed, tmp_path):
    where = subprocess.run(
        [installed / "python", "-c", "import qcli, qcli.resources as r; print(qcli.__file__); print(r.configs_dir())"],
        capture_output=True, text=True, check=True, cwd=tmp_path, env=CLEAN_ENV,
    ).stdout.split()  # fmt: skip
    assert all(str(installed.parent) in w for w in where), where
    r = _run(installed, "presets", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert {p["name"] for p in json.loads(r.stdout)["presets"]} >= {"qlora", "bf16", "int8", "nf4"}


def test_estimate_works_without_the_load_extra(installed, tmp_path):
    model = tmp_path / "Meta-Llama-3-8B"
    model.mkdir()
    shutil.copy(FIXTURES / "llama3-8b.json", model / "config.json")  # a hub snapshot's config.json
    r = _run(installed, "estimate", str(model), "--preset", "qlora", "--gpu", "T4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "fits" in r.stdout and "GiB" in r.stdout
    r = _run(installed, "estimate", "--params", "8b", "--bits", "4", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["plans"][0]["weight_bytes"] == 4_500_000_064
    r = _run(installed, "estimate", "demo", "--preset", "qlora", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("args", [("load", "demo"), ("verify", "demo"), ("compare", "demo")])
def test_loading_commands_name_the_extra(installed, tmp_path, args):
    r = _run(installed, *args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and HINT in lines[0] and "torch" in lines[0], r.stderr
    assert not (tmp_path / "c").exists()  # nothing was built


def test_meta_path_names_the_extra(installed, tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "t5", "d_model": 512, "num_layers": 6, "vocab_size": 32128}))
    r = _run(installed, "estimate", str(cfg), cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and HINT in lines[0], r.stderr


def test_env_and_version_work_without_the_extra(installed, tmp_path):
    r = _run(installed, "env", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["packages"]["torch"] is None and data["packages"]["typer"]
    r = _run(installed, "env", cwd=tmp_path)
    assert r.returncode == 0 and "torch" in r.stdout and "not installed" in r.stdout, r.stderr
    r = _run(installed, "--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("qcli "), r.stdout
    assert re.search(r"^torch +not installed", r.stdout, re.M), r.stdout
