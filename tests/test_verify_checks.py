"""Every verify check can fail: each test below makes one fail on a tiny real checkpoint (transformers +
bitsandbytes on the CPU, nothing mocked), and the load report says what was loaded, read back from the
modules. The checkpoints are built once for the module."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest

pytestmark = pytest.mark.slow

TOKENIZER: list = []  # the demo's BPE tokenizer (trained in a second), built once


def _with_demo_tokenizer(out: Path) -> str:
    from qcli.resources import data_text
    from qcli.run.demo import _tokenizer

    if not TOKENIZER:
        TOKENIZER.append(_tokenizer(data_text("sample.txt")))
    TOKENIZER[0].save_pretrained(out)
    return str(out)


def _tiny_llama(tie: bool = True):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from qcli.model.demo import DEMO_VOCAB

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=DEMO_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Tiny checkpoints: a tied Llama, the same pre-quantized (nf4, fp16 compute, no double quant),
    one with a NaN weight, and a Falcon (its FalconLinear modules are not converted by transformers)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, FalconConfig, FalconForCausalLM

    from qcli.model.demo import DEMO_VOCAB

    root = tmp_path_factory.mktemp("ckpts")
    out = {}
    _tiny_llama().save_pretrained(root / "tiny")
    out["tiny"] = _with_demo_tokenizer(root / "tiny")
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float16)
    pre = AutoModelForCausalLM.from_pretrained(out["tiny"], dtype=torch.float16, quantization_config=q)
    pre.save_pretrained(root / "prequant")
    out["prequant"] = _with_demo_tokenizer(root / "prequant")
    nan = _tiny_llama()
    with torch.no_grad():
        nan.model.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    nan.save_pretrained(root / "nan")
    out["nan"] = _with_demo_tokenizer(root / "nan")
    torch.manual_seed(0)
    fc = FalconConfig(
        vocab_size=DEMO_VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        new_decoder_architecture=False, multi_query=True, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    FalconForCausalLM(fc).save_pretrained(root / "falcon")
    out["falcon"] = _with_demo_tokenizer(root / "falcon")
    return out


def _check(data: dict, name: str) -> dict:
    return next(c for c in data["checks"] if c["name"] == name)


def verify_json(cli, *args: str) -> tuple[int, dict]:
    r = cli("verify", *args, "--json")
    assert r.out, r.err
    return r.code, r.json()


# --- load: introspect, don't echo -------------------------------------------------------------------


def test_load_report_reads_quantization_from_the_modules(cli, ckpts):
    r = cli("load", ckpts["tiny"], "--preset", "qlora", "--json")
    assert r.code == 0, r.err
    data = r.json()
    [group] = [g for g in data["census"]["quantization"] if g["quantized"]]
    assert group["layer"] == "Linear4bit" and group["quant_type"] == "nf4" and group["double_quant"] is True
    assert group["compute_dtype"] == "bfloat16" and group["block_size"] == 64 and group["absmax_dtype"] == "uint8"
    assert len(group["modules"]) == 14  # 7 linears × 2 layers; the tied lm_head stays unquantized
    assert data["census"]["kept_params_by_dtype"] == {"bfloat16": data["census"]["kept_params_by_dtype"]["bfloat16"]}
    assert data["memory_bytes_by_device"] == {"cpu": data["memory_bytes"]} and data["offloaded_bytes"] == 0
    assert data["measured_at"].startswith("after the load, before the first forward")
    assert any("first forward pass" in n and "absmax" in n for n in data["notes"])
    assert data["preset_overridden"] is False and data["quantization"]["bnb_4bit_quant_type"] == "nf4"


def test_int8_threshold_is_read_back(cli, ckpts):
    r = cli("load", ckpts["tiny"], "--preset", "int8", "--set", "quantization.llm_int8_threshold=4.5", "--json")
    assert r.code == 0, r.err
    [group] = r.json()["census"]["quantization"]
    assert group["layer"] == "Linear8bitLt" and group["outlier_threshold"] == 4.5 and group["storage_dtype"] == "int8"


def test_prequantized_checkpoint_overrides_the_preset_and_says_so(cli, ckpts):
    """The checkpoint stores nf4 with fp16 compute; preset nf4 asks bf16 compute. transformers keeps the
    checkpoint's config: the report says so and reads fp16 back from the modules."""
    r = cli("load", ckpts["prequant"], "--preset", "nf4", "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert data["preset_overridden"] is True and data["checkpoint_quantization"]["bnb_4bit_quant_type"] == "nf4"
    assert "OVERRODE PRESET nf4" in data["notes"][0]
    groups = [g for g in data["census"]["quantization"] if g["quantized"]]
    assert {(g["quant_type"], g["compute_dtype"]) for g in groups} == {("nf4", "float16")}  # loaded, not asked
    table = cli("load", ckpts["prequant"], "--preset", "nf4")
    assert "WARNING: the checkpoint's own quantization_config overrode preset nf4" in table.out


def test_prequantized_checkpoint_refuses_another_quantization(cli, ckpts):
    """fp4 or bf16 on an nf4 checkpoint cannot be what loads: bad input before anything loads."""
    for preset in ("fp4", "bf16"):
        r = cli("load", ckpts["prequant"], "--preset", preset)
        assert r.code == 2 and "already quantized (nf4" in r.err and len(r.err.strip().splitlines()) == 1, r.err


def test_tied_embeddings_with_a_skip_list_that_leaves_out_lm_head(cli, ckpts):
    """llm_int8_skip_modules replaces the default list: lm_head becomes Linear4bit holding the tied
    (unquantized) embedding weight. Measurement must say so, not crash."""
    skip = "quantization.llm_int8_skip_modules=[down_proj]"
    r = cli("load", ckpts["tiny"], "--preset", "nf4", "--set", skip, "--json")
    assert r.code == 0, r.err
    plain = [g for g in r.json()["census"]["quantization"] if not g["quantized"]]
    assert plain and plain[0]["modules"] == ["lm_head"] and plain[0]["quant_type"] is None


# --- verify: every check fails when it should ----------------------------------------------------------


def test_quantization_check_fails_on_a_wrong_quant_type(ckpts):
    """The CLI refuses fp4 on an nf4 checkpoint before loading (below), so the check itself is shown to fail
    here: the modules of a real nf4 load, judged against preset fp4."""
    from qcli.plan.presets import load_preset
    from qcli.run import checks
    from qcli.run.loader import LoadOptions, load_report

    report, _ = load_report(LoadOptions(model=ckpts["tiny"], preset="nf4", device="cpu"))
    assert checks.quantization(report, load_preset("nf4")).passed
    check = checks.quantization(report, load_preset("fp4"))
    assert not check.passed and "quant type nf4, preset fp4 asks fp4" in check.detail


def test_verify_refuses_a_preset_of_another_quantization(cli, ckpts, tmp_path):
    junit = tmp_path / "v.xml"
    r = cli("verify", ckpts["prequant"], "--preset", "fp4", "--junit", str(junit))
    assert r.code == 2 and "already quantized (nf4" in r.err
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("errors") == "1" and "already quantized" in suite.find("testcase/error").get("message")


def test_quantization_fails_on_wrong_compute_dtype(cli, ckpts):
    code, data = verify_json(cli, ckpts["prequant"], "--preset", "nf4")  # nf4 asks bfloat16 compute
    check = _check(data, "quantization")
    assert code == 1 and not check["passed"] and "compute dtype float16, preset nf4 asks bfloat16" in check["detail"]
    assert "quant type" not in check["detail"]


def test_quantization_fails_when_double_quant_is_absent(cli, ckpts):
    args = ["--set", "quantization.bnb_4bit_use_double_quant=true"]
    args += ["--set", "quantization.bnb_4bit_compute_dtype=float16"]
    code, data = verify_json(cli, ckpts["prequant"], "--preset", "nf4", *args)
    check = _check(data, "quantization")
    assert code == 1 and "double quantization expected but absent" in check["detail"]
    assert "compute dtype" not in check["detail"]


def test_quantization_fails_when_nothing_is_quantized(cli, ckpts):
    """Falcon's FalconLinear is not converted by transformers: int8 quantizes nothing."""
    code, data = verify_json(cli, ckpts["falcon"], "--preset", "int8")
    check = _check(data, "quantization")
    assert code == 1 and not check["passed"] and "no module was converted to Linear8bitLt" in check["detail"]
    assert data["load"]["census"]["linear8bit"] == 0


def test_memory_vs_estimate_fails_beyond_tolerance(cli, ckpts):
    """int8 with every block offloaded to disk: accelerate keeps offloaded modules' weights unquantized,
    so the loaded bytes exceed the int8 estimate far beyond the tolerance."""
    code, data = verify_json(cli, ckpts["tiny"], *INT8_OFFLOAD, "--allow-offload")
    check = _check(data, "memory_vs_estimate")
    assert code == 1 and not check["passed"] and "tolerance 5.0%" in check["detail"] and "offloaded" in check["detail"]
    assert data["load"]["memory_bytes"] > data["load"]["estimate_bytes"] * 1.05


def test_forward_finite_fails_on_a_nan_weight(cli, ckpts):
    code, data = verify_json(cli, ckpts["nan"], "--preset", "bf16")
    check = _check(data, "forward_finite")
    assert code == 1 and not check["passed"] and "NaN/inf" in check["detail"]
    assert _check(data, "quantization")["passed"] and _check(data, "placement")["passed"]


def test_generation_is_skipped_without_expect_and_fails_when_absent(cli, ckpts, tmp_path):
    junit = tmp_path / "v.xml"
    code, data = verify_json(cli, ckpts["tiny"], "--preset", "bf16", "--junit", str(junit))
    gen = _check(data, "generation")
    assert gen["skipped"] and "skipped: no --expect" in gen["detail"]
    assert code == 0 and data["passed"]
    suite = ET.parse(junit).getroot().find("testsuite")
    case = next(c for c in suite.findall("testcase") if c.get("name") == "generation")
    assert case.find("skipped") is not None and suite.get("skipped") == "1"
    assert all(c.get("time") is not None for c in suite.findall("testcase"))
    assert {c.get("classname") for c in suite.findall("testcase")} == {f"qcli.verify[{ckpts['tiny']}][bf16]"}
    code, data = verify_json(cli, ckpts["tiny"], "--preset", "bf16", "--expect", "Zanzibar")
    assert code == 1 and "'Zanzibar' absent" in _check(data, "generation")["detail"]


def test_reference_fails_out_of_bounds_and_is_measured_first(cli, ckpts):
    code, data = verify_json(cli, ckpts["tiny"], "--preset", "nf4", "--reference", "bf16", "--max-kl", "1e-9")
    check = _check(data, "reference")
    assert code == 1 and not check["passed"] and "KL" in check["detail"]
    assert data["reference"]["preset"] == "bf16" and data["reference"]["memory_bytes"] > 0
    code, data = verify_json(cli, ckpts["tiny"], "--preset", "nf4", "--reference", "bf16", "--min-agreement", "1.0")
    agreement = float(_check(data, "reference")["detail"].split("agreement ")[1].split()[0])
    assert (code == 1) == (agreement < 1.0)


def test_reference_gets_every_load_flag_of_the_candidate():
    from qcli.run.loader import LoadOptions
    from qcli.run.verify import VerifyOptions, reference_spec

    opts = VerifyOptions(
        load=LoadOptions(
            model="org/m", preset="nf4", revision="abc123", trust_remote_code=True, device="cpu",
            device_map="auto", max_memory="cpu=1GiB", sets=["quantization.bnb_4bit_compute_dtype=float16"],
        ),
        reference="bf16",
    )  # fmt: skip
    spec = reference_spec(opts, "text", "/tmp/x")
    assert (spec.model, spec.preset, spec.revision, spec.trust_remote_code) == ("org/m", "bf16", "abc123", True)
    assert (spec.device, spec.device_map, spec.max_memory) == ("cpu", "auto", "cpu=1GiB")


# --- offload -------------------------------------------------------------------------------------------

OFFLOAD = ["--device-map", "auto", "--max-memory", "cpu=80KiB"]
INT8_OFFLOAD = ["--preset", "int8", "--set", "quantization.llm_int8_enable_fp32_cpu_offload=true", *OFFLOAD]


def test_offloaded_bytes_are_reported_not_dropped(cli, ckpts):
    r = cli("load", ckpts["tiny"], "--preset", "bf16", *OFFLOAD, "--json")
    assert r.code == 0, r.err
    data = r.json()
    by_device = data["memory_bytes_by_device"]
    assert by_device["disk"] > 0 and data["offloaded_bytes"] == by_device["disk"]
    assert data["memory_bytes"] == sum(by_device.values())
    assert data["memory_bytes"] == data["estimate_bytes"]  # every tensor counted, on disk too
    assert data["census"]["offloaded"] and data["census"]["meta_tensors"] == 0


def test_placement_fails_when_offloaded_and_allow_offload_allows_it(cli, ckpts):
    code, data = verify_json(cli, ckpts["tiny"], *INT8_OFFLOAD)
    check = _check(data, "placement")
    assert code == 1 and not check["passed"] and "--allow-offload" in check["detail"]
    assert data["load"]["memory_bytes_by_device"]["disk"] > 0
    code, data = verify_json(cli, ckpts["tiny"], *INT8_OFFLOAD, "--allow-offload")
    check = _check(data, "placement")
    assert check["passed"] and "allowed by --allow-offload" in check["detail"]


# --- JUnit for every outcome, output paths first -------------------------------------------------------


def test_junit_holds_an_error_when_verify_stops_on_bad_input(cli, tmp_path):
    junit = tmp_path / "v.xml"
    r = cli("verify", "demo", "--preset", "nope", "--junit", str(junit))
    assert r.code == 2
    suite = ET.parse(junit).getroot().find("testsuite")
    [case] = suite.findall("testcase")
    assert suite.get("errors") == "1" and "unknown preset" in case.find("error").get("message")
    assert case.get("classname") == "qcli.verify[demo][nope]"


def test_junit_holds_an_error_when_the_checkpoint_does_not_match(cli, tmp_path):
    from qcli.model.demo import DEMO_CONFIG

    (tmp_path / "config.json").write_text(json.dumps(DEMO_CONFIG))
    # A well-formed file whose tensor has the wrong shape: it passes the header check, transformers refuses it.
    from safetensors.numpy import save_file

    save_file({"model.embed_tokens.weight": np.zeros((3, 3), dtype=np.float32)}, tmp_path / "model.safetensors")
    _with_demo_tokenizer(tmp_path)  # verify checks the tokenizer before the load
    junit = tmp_path / "v.xml"
    r = cli("verify", str(tmp_path), "--preset", "bf16", "--junit", str(junit))
    assert r.code == 2  # weights that do not match the config are bad input
    suite = ET.parse(junit).getroot().find("testsuite")
    errors = suite.findall("testcase/error")
    assert suite.get("errors") == "1" and len(errors) == 1
    assert "does not match its config" in errors[0].get("message")


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: str(p / "missing" / "out.xml"), "does not exist"),
        (lambda p: str(p), "is a directory"),
        (lambda p: "/proc/qcli-out.xml", "cannot be written"),
    ],
)
@pytest.mark.parametrize("flag", ["verify --junit", "compare --csv", "compare --markdown", "compare --plot"])
def test_bad_output_paths_are_exit_2_before_any_work(cli, tmp_path, make, needle, flag):
    import time

    command, option = flag.split()
    start = time.perf_counter()
    r = cli(command, "demo", option, make(tmp_path))
    assert r.code == 2 and needle in r.err and option in r.err
    assert time.perf_counter() - start < 0.5
