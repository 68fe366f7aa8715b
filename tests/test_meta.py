"""The meta path through the real CLI: transformers' config loader, the spec cache, readable errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import plan

ROOT = Path(__file__).resolve().parent.parent

# A tiny Mamba-2 config as transformers 5 writes it: time_step_limit's infinity is a tagged object.
MAMBA2 = {
    "architectures": ["Mamba2ForCausalLM"],
    "model_type": "mamba2",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_heads": 8,
    "head_dim": 16,
    "state_size": 16,
    "n_groups": 1,
    "expand": 2,
    "conv_kernel": 4,
    "vocab_size": 128,
    "time_step_limit": [0.0, {"__float__": "Infinity"}],
}


def _write(tmp_path: Path, cfg: dict) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def test_infinity_tagged_config_is_read_by_transformers_loader(cli, tmp_path):
    r = cli("estimate", "--model", _write(tmp_path, MAMBA2), "--preset", "qlora", "--context", "100", "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert data["model"]["count_method"] == "meta"
    assert data["model"]["model_class"] == "Mamba2ForCausalLM"
    p = plan(data)
    assert 0 < p["quantized_params"] < p["total_params"]
    # no KV cache: per layer a conv state in the load dtype (expand·hidden + 2·groups·state channels × kernel)
    # and an SSM state in float32 (heads × head_dim × state), whatever the context
    conv = (2 * 64 + 2 * 1 * 16) * 4 * 2
    ssm = 8 * 16 * 16 * 4
    assert p["kv_cache_bytes"] == p["kv_cache_decode_bytes"] == 2 * (conv + ssm)


def test_unknown_model_type_with_auto_map_mentions_trust_remote_code(cli, tmp_path):
    cfg = {"model_type": "my_own_lm", "auto_map": {"AutoConfig": "configuration_my.MyConfig"}, "hidden_size": 8}
    r = cli("estimate", "--model", _write(tmp_path, cfg), "--bits", "4")
    assert r.code == 2
    assert "my_own_lm" in r.err and "--trust-remote-code" in r.err
    assert len(r.err.strip().splitlines()) <= 2  # the error line and its hint, no traceback


def test_unknown_model_type_without_auto_map(cli, tmp_path):
    r = cli("estimate", "--model", _write(tmp_path, {"model_type": "no_such_lm", "hidden_size": 8}), "--bits", "4")
    assert r.code == 2
    assert "does not know model_type 'no_such_lm'" in r.err and "--trust-remote-code" not in r.err


def test_second_meta_estimate_reads_the_spec_cache_without_torch(tmp_path):
    config = _write(tmp_path, MAMBA2)
    env = {**os.environ, "QCLI_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    env.pop("QCLI_NO_SPEC_CACHE", None)
    probe = (
        "import sys, json; from qcli.cli import main; "
        f"code = main(['estimate', '--model', {config!r}, '--bits', '4', '--json']); "
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr); sys.exit(code)"
    )
    runs = [subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-2000:]
    assert "TORCH" in runs[0].stderr.split()  # the first build imports torch and transformers
    assert "NO-TORCH" in runs[1].stderr.split()  # the second reads QCLI_CACHE/specs
    assert json.loads(runs[0].stdout)["plans"] == json.loads(runs[1].stdout)["plans"]
    assert len(list((tmp_path / "cache" / "specs").glob("*.json"))) == 1


# A Llama-sized config under BERT's model_type: a meta-path family whose special token ids lie outside the
# vocabulary (transformers' config class logs a warning about each).
BERT_OUT_OF_VOCAB_IDS = {
    "model_type": "bert",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "vocab_size": 257,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
}


def test_transformers_config_warnings_stay_off_stderr(tmp_path):
    config = _write(tmp_path, BERT_OUT_OF_VOCAB_IDS)
    env = {**os.environ, "QCLI_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT), "QCLI_NO_SPEC_CACHE": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "qcli", "estimate", config, "--bits", "4", "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr == ""
    json.loads(r.stdout)


def test_a_config_transformers_refuses_is_bad_input_with_its_reason(cli, tmp_path):
    bad = {**BERT_OUT_OF_VOCAB_IDS, "layer_types": ["bogus", "bogus"]}
    r = cli("estimate", "--model", _write(tmp_path, bad), "--bits", "4")
    assert r.code == 2, r.err
    assert "transformers cannot read it" in r.err and "layer_types" in r.err
    assert len(r.err.strip().splitlines()) == 1 and len(r.err) < 400
