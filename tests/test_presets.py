import pytest

from qcli.errors import UsageError
from qcli.plan.presets import builtin_names, load_preset


def test_builtins():
    assert set(builtin_names()) >= {"fp32", "fp16", "bf16", "int8", "nf4", "fp4", "qlora"}
    q = load_preset("qlora")
    assert q.weight_format().key == "nf4+dq" and q.compute_dtype == "bfloat16"
    assert load_preset("nf4").weight_format().key == "nf4" and load_preset("fp4").weight_format().key == "fp4"


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
