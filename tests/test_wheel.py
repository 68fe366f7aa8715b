"""The presets and GPU catalog ship inside the wheel: an install in a fresh venv, away from the
source tree, finds its own copy (issue 9) and runs without the `load` extra (issue 15)."""

import json
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """Return the bin/ of a fresh venv holding the built wheel; its dependencies come from this venv."""
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
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(subprocess.run(
        [venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip())  # fmt: skip
    # Dependencies (typer, rich, pydantic, …) from this environment's site-packages, added by a .pth
    # after the venv's own: the editable qcli of this checkout is NOT visible there (its .pth is not read).
    deps = [p for p in {*site.getsitepackages(), sysconfig.get_paths()["purelib"]} if Path(p).is_dir()]
    (purelib / "deps.pth").write_text("\n".join(deps) + "\n")
    subprocess.run(
        [*pip, "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    return venv / "bin"


def _run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "NO_COLOR": "1", "HF_HUB_OFFLINE": "1", "QCLI_CACHE": str(cwd / "c")}
    return subprocess.run([str(bin_dir / "qcli"), *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_installed_wheel_reads_its_own_configs(installed, tmp_path):
    where = subprocess.run(
        [installed / "python", "-c", "import qcli, qcli.resources as r; print(qcli.__file__); print(r.configs_dir())"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    ).stdout.split()  # fmt: skip
    assert all(str(installed.parent) in w for w in where), where
    r = _run(installed, "presets", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert {p["name"] for p in json.loads(r.stdout)["presets"]} >= {"qlora", "bf16", "int8", "nf4"}
    r = _run(installed, "estimate", "--model", "demo", "--preset", "qlora", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["plans"][0]["weight_bytes"] > 0
