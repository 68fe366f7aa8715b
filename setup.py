"""Copies the top-level configs/ into the wheel as qcli/configs (package data read through
importlib.resources); everything else about the build is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildWithConfigs(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's configs/ directly
            return
        target = Path(self.build_lib) / "qcli" / "configs"
        target.mkdir(parents=True, exist_ok=True)
        for src in sorted((ROOT / "configs").glob("*.yaml")):
            shutil.copy2(src, target / src.name)


setup(cmdclass={"build_py": BuildWithConfigs})
