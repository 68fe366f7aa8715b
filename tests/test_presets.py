import json

import pytest

from qcli.errors import UsageError
from qcli.plan.presets import builtin_names, load_preset


def test_builtins():
    assert set(builtin_names()) >= {"fp32", "fp16", "bf16", "int8", "nf4", "fp4", "qlora"}
    q = load_preset("qlora")
    assert q.weight_format().key == "nf4+dq" and q.compute_dtype == "bfloat16"
    assert load_preset("nf4").weight_format().key == "nf4" and load_preset("fp4").weight_format().key == "fp4"


def test_a_preset_changed_by_set_says_so_in_its_name_and_source():
    changed = load_preset("qlora", ["quantization=null"])
    assert changed.name == "qlora (--set)" and changed.weight_format().key == "bf16"
    assert changed.source == "configs/qlora.yaml with --set quantization=null"
    assert load_preset("qlora", ["dtype=bfloat16"]).name == "qlora"  # the value it had: still qlora
    with pytest.raises(UsageError, match=r"configs/qlora\.yaml with --set dtype=float17: dtype"):
        load_preset("qlora", ["dtype=float17"])


def test_set_override():
    p = load_preset("qlora", ["quantization.bnb_4bit_compute_dtype=float16"])
    assert p.quantization.bnb_4bit_compute_dtype == "float16"
    assert load_preset("bf16", ["quantization.load_in_8bit=true"]).weight_format().key == "int8"


def test_to_bnb_config_has_explicit_dtypes():
    import torch

    cfg = load_preset("qlora").to_bnb_config()
    assert cfg.load_in_4bit and cfg.bnb_4bit_use_double_quant and cfg.bnb_4bit_compute_dtype == torch.bfloat16
    assert load_preset("bf16").to_bnb_config() is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: x\ndtype: bfloat16\nextra: 1\n", "extra: unknown key"),
        ("name: x\ndtype: bfloat16\nquantization:\n  load_in_4bit: true\n  load_in_8bit: true\n", "cannot both"),
        (
            "name: x\ndtype: bfloat16\nquantization:\n  load_in_4bit: true\n  bnb_4bit_quant_type: int3\n",
            "bnb_4bit_quant_type",
        ),
        ("name: x\ndtype: float13\n", "dtype"),
        ("name: x\ndtype: bfloat16\nquantization:\n  load_in_4bit: maybe\n", "load_in_4bit"),
        ("name: x\ndtype: [bfloat16\n", "YAML syntax error"),
        ("", "empty"),
        ("- a\n- b\n", "mapping"),
        ("!!python/object/apply:os.system ['touch /tmp/qcli-pwned']\n", "YAML"),
    ],
)
def test_invalid_presets_name_file_and_field(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        load_preset(str(path))
    assert str(path) in err.value.message and needle in err.value.message


def test_python_tag_never_executes(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(UsageError):
        load_preset(str(path))
    assert not marker.exists()


def test_presets_cli(cli):
    r = cli("presets")
    assert r.code == 0 and "qlora" in r.out and "double quant" in r.out
    r = cli("presets", "show", "qlora")
    assert "BitsAndBytesConfig(" in r.out and "bnb_4bit_use_double_quant=True" in r.out
    assert cli("presets", "show", "nope").code == 2
    r = cli("presets", "show", "qlora", "--set", "quantization.bnb_4bit_compute_dtype=fp16", "--json")
    data = r.json()
    assert len(data["presets"]) == 1 and data["command"] == "presets"
    assert data["presets"][0]["bitsandbytes_config"]["bnb_4bit_compute_dtype"] == "float16"


Q = "name: x\ndtype: bfloat16\nquantization:\n"


@pytest.mark.parametrize(
    ("keys", "needles"),
    [
        ("  load_in_8bit: true\n  bnb_4bit_quant_type: nf4\n", ["load_in_8bit is true", "bnb_4bit_quant_type applies"]),
        (
            "  load_in_8bit: true\n  bnb_4bit_use_double_quant: true\n  bnb_4bit_compute_dtype: float16\n",
            ["bnb_4bit_use_double_quant, bnb_4bit_compute_dtype apply to 4-bit"],
        ),
        ("  load_in_4bit: true\n  llm_int8_threshold: 5.0\n", ["load_in_4bit is true", "llm_int8_threshold"]),
        ("  load_in_4bit: 'yes'\n", ["quantization.load_in_4bit: got 'yes'; use true or false"]),
        ("  load_in_4bit: 'true'\n", ["quantization.load_in_4bit: got 'true'"]),
        ("  load_in_4bit: 1\n", ["quantization.load_in_4bit: got 1"]),
        ("  load_in_8bit: true\n  llm_int8_has_fp16_weight: 0\n", ["llm_int8_has_fp16_weight: got 0"]),
    ],
)
def test_keys_of_the_other_mode_and_loose_booleans_are_refused(tmp_path, keys, needles):
    """load_in_8bit with a 4-bit key silently loaded int8 without it; "yes" and 1 passed as true."""
    f = tmp_path / "p.yaml"
    f.write_text(Q + keys)
    with pytest.raises(UsageError) as info:
        load_preset(str(f))
    assert info.value.message.startswith(f"{f}: quantization")
    for needle in needles:
        assert needle in info.value.message


def test_a_mode_switched_by_set_names_the_keys_left_behind():
    with pytest.raises(UsageError, match="bnb_4bit_quant_type, bnb_4bit_use_double_quant, bnb_4bit_compute_dtype"):
        load_preset("qlora", ["quantization.load_in_4bit=false", "quantization.load_in_8bit=true"])


def test_yaml_booleans_and_a_checkpoints_full_config_still_pass():
    """YAML's own true/false/yes (parsed as booleans) pass; a checkpoint's saved quantization_config carries
    every key of both modes (transformers writes them all) and is not held to the preset rule."""
    from transformers import BitsAndBytesConfig

    from qcli.plan.prequantized import prequant_of

    assert load_preset("bf16", ["quantization.load_in_8bit=yes"]).weight_format().key == "int8"
    saved = json.loads(BitsAndBytesConfig(load_in_8bit=True).to_json_string(use_diff=False))  # as config.json holds it
    assert "bnb_4bit_quant_type" in saved
    assert prequant_of(saved, "m").format.key == "int8"


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path, cli):
    """PyYAML keeps the last of two equal keys silently: the author of this preset reads fp4, PyYAML loads nf4."""
    path = tmp_path / "dup.yaml"
    path.write_text(
        "name: dup\ndtype: bfloat16\nquantization:\n  load_in_4bit: true\n"
        "  bnb_4bit_quant_type: fp4\n  bnb_4bit_quant_type: nf4\n"
    )
    with pytest.raises(UsageError, match=r"line 6: found the key 'bnb_4bit_quant_type' twice \(first at line 5\)"):
        load_preset(str(path))
    r = cli("estimate", "--params", "8b", "--preset", str(path))
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "twice" in r.err
    with pytest.raises(UsageError, match=r"--set 'quantization'.*'load_in_4bit' twice"):
        load_preset("bf16", ["quantization={load_in_4bit: true, load_in_4bit: false}"])


def test_merge_keys_may_still_be_overridden(tmp_path):
    """A `<<` merge is not a duplicate: the mapping's own key wins over the merged one, as YAML says."""
    path = tmp_path / "merge.yaml"
    path.write_text(
        "name: merged\ndtype: bfloat16\nquantization:\n  <<: {load_in_4bit: true, bnb_4bit_quant_type: fp4}\n"
        "  bnb_4bit_quant_type: nf4\n"
    )
    assert load_preset(str(path)).weight_format().key == "nf4"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: '   '\ndtype: bfloat16\n", "name: is blank"),
        ('name: "a\\0b"\ndtype: bfloat16\n', "name: holds control characters"),
        ('name: "two\\nlines"\ndtype: bfloat16\n', "name: holds control characters"),
        ("name: a\ndtype: bfloat16\nsource: elsewhere\n", "source: unknown key"),
    ],
)
def test_a_name_that_cannot_be_shown_and_a_source_key_are_refused(tmp_path, text, needle):
    """The name goes into reports, JUnit test names and compare's rows; `source` is what qcli records itself."""
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=needle):
        load_preset(str(path))
    with pytest.raises(UsageError, match="name: is blank"):
        load_preset("qlora", ["name=' '"])
    with pytest.raises(UsageError, match="source: unknown key"):
        load_preset("bf16", ["source=elsewhere"])  # a --set cannot write it either


def test_a_name_with_a_non_breaking_space_or_an_emoji_sequence_is_a_name(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text('name: "a\u00a0b \U0001f469\u200d\U0001f52c"\ndtype: bfloat16\n', encoding="utf-8")
    assert load_preset(str(path)).name == "a\u00a0b \U0001f469\u200d\U0001f52c"


def test_a_mapping_merged_into_an_anchor_that_is_merged_again_is_no_duplicate(tmp_path):
    """PyYAML merges `<<` into the anchored node's own key list while building: a check made after that saw
    the merged keys as given twice (this YAML is valid, and yaml.safe_load reads it)."""
    from qcli.plan.safe_yaml import load_yaml

    text = "a: &a {x: 1}\nm:\n  b: &b\n    <<: *a\n    x: 2\n  <<: *b\n"
    assert load_yaml(text, "t") == {"a": {"x": 1}, "m": {"x": 1, "b": {"x": 2}}}
