"""A local model that ships its own code (auto_map, configuration_x.py and modeling_x.py beside config.json)
loads and is estimated under --trust-remote-code; a code file it names and lacks is bad input.

The code is a thin subclass of transformers' Llama, its weights a tiny real Llama's (nothing mocked).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import save_tiny_llama

pytestmark = pytest.mark.slow

CONFIGURATION = """from transformers import LlamaConfig


class XConfig(LlamaConfig):
    model_type = "qcli_x"
"""
MODELING = """from transformers import LlamaForCausalLM

from .configuration_x import XConfig


class XForCausalLM(LlamaForCausalLM):
    config_class = XConfig
"""


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("remote") / "xmodel"
    save_tiny_llama(out)
    data = json.loads((out / "config.json").read_text())
    data |= {
        "model_type": "qcli_x",
        "architectures": ["XForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_x.XConfig", "AutoModelForCausalLM": "modeling_x.XForCausalLM"},
    }
    (out / "config.json").write_text(json.dumps(data))
    (out / "configuration_x.py").write_text(CONFIGURATION)
    (out / "modeling_x.py").write_text(MODELING)
    return out


@pytest.mark.parametrize("preset", ["bf16", "qlora"])
def test_a_model_with_its_own_code_loads_and_is_estimated(cli, remote, preset, monkeypatch):
    monkeypatch.setenv("QCLI_NO_SPEC_CACHE", "1")  # the meta-device build runs the repo's code, not a cached spec
    r = cli("load", str(remote), "--preset", preset, "--trust-remote-code", "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert data["estimate_bytes"] == data["memory_bytes"]  # described from the same code that loaded
    assert not any("cannot describe" in n for n in data["notes"])


def test_the_meta_description_uses_the_repos_class(remote):
    from qcli.model.describe import from_config

    cfg = json.loads((remote / "config.json").read_text())
    spec = from_config(cfg, trust_remote_code=True, code_dir=remote)
    assert spec.model_class == "XForCausalLM" and spec.source == "meta"


def test_without_the_flag_it_says_to_pass_it(cli, remote):
    r = cli("load", str(remote), "--preset", "bf16")
    assert r.code == 2 and "--trust-remote-code" in r.err


def test_a_code_file_auto_map_names_and_the_directory_lacks_is_bad_input(cli, remote, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(remote, broken)
    (broken / "modeling_x.py").unlink()
    r = cli("load", str(broken), "--preset", "bf16", "--trust-remote-code")
    assert r.code == 2 and "modeling_x.py" in r.err and "internal error" not in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1
