"""The presets and GPU catalog ship inside the wheel: a non-editable install finds them."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_presets_and_works_installed(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("qcli-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"qcli/configs/qlora.yaml", "qcli/configs/gpus.yaml", "qcli/data/sample.txt"} <= names
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "import qcli, qcli.presets as p, qcli.gpus as g; "
        f"assert qcli.__file__.startswith({str(target)!r}), qcli.__file__; "
        "print(len(p.builtin_names()), p.load_preset('qlora').name, g.resolve_gpu('T4').name)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert out.stdout.split() == ["8", "qlora", "T4"]
