"""compare's preset list: one preset spelled two ways (any case, or a name and its file) is one preset, as
everywhere else in qcli; the reference named in another case is the listed one, not an extra worker.
These checks run before any worker (compare.validate), so no model is loaded here."""

from __future__ import annotations

import shutil

import pytest

from qcli.errors import UsageError
from qcli.plan.presets import preset_key
from qcli.resources import config_file
from qcli.run.compare import CompareOptions, validate


def test_preset_key_ignores_case_and_finds_a_builtin_by_its_file(tmp_path, monkeypatch):
    packaged = str(config_file("qlora.yaml"))
    assert preset_key("qlora") == preset_key("QLoRA") == preset_key(" QLORA ") == preset_key(packaged)
    assert preset_key("qlora") != preset_key("nf4")
    shutil.copy(packaged, tmp_path / "mine.yaml")
    monkeypatch.chdir(tmp_path)
    assert preset_key("mine.yaml") == preset_key(str(tmp_path / "mine.yaml")) != preset_key("qlora")


@pytest.mark.parametrize(
    ("presets", "needle"),
    [
        (["bf16", "BF16"], "'bf16' and 'BF16', the same preset"),
        (["bf16", "qlora", "QLoRA"], "'qlora' and 'QLoRA'"),
        (["bf16", str(config_file("bf16.yaml"))], "the same preset"),
        (["bf16", "bf16"], "'bf16' twice"),
        (["bf16", "", "qlora"], "empty entry"),
        (["bf16", ""], "empty entry"),
    ],
)
def test_one_preset_listed_twice_is_refused(presets, needle):
    with pytest.raises(UsageError, match="--presets") as info:
        validate(CompareOptions(model="demo", presets=presets))
    assert needle in info.value.message


@pytest.mark.parametrize("reference", ["QLORA", "qlora", " QLoRA", str(config_file("qlora.yaml"))])
def test_the_reference_in_another_spelling_is_the_listed_preset(reference):
    presets, ref, _, _ = validate(CompareOptions(model="demo", presets=["bf16", "qlora"], reference=reference))
    assert presets == ["bf16", "qlora"] and ref == "qlora"  # two workers, not three


def test_a_reference_not_listed_runs_first():
    presets, ref, _, _ = validate(CompareOptions(model="demo", presets=["bf16", "nf4"], reference="QLORA"))
    assert presets == ["QLORA", "bf16", "nf4"] and ref == "QLORA"


def test_a_copy_of_a_builtin_under_another_path_is_another_preset(tmp_path):
    shutil.copy(config_file("bf16.yaml"), tmp_path / "bf16-copy.yaml")
    presets, _, _, _ = validate(CompareOptions(model="demo", presets=["bf16", str(tmp_path / "bf16-copy.yaml")]))
    assert len(presets) == 2
