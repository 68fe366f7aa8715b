"""The validation modules on their own: bounded YAML, safetensors headers, config keys, number limits.
(tests/test_hostile.py drives the same code through the CLI.)"""

from __future__ import annotations

import json
import struct
import time

import numpy as np
import pytest
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from qcli.errors import UsageError
from qcli.model.config_schema import validate_config
from qcli.model.resolve import resolve
from qcli.model.safetensors_header import (
    SafetensorsError,
    check_entries,
    checkpoint_files,
    read_header,
    stored_bytes,
)
from qcli.plan.limits import check_float, check_int
from qcli.plan.safe_yaml import MAX_VALUES, load_yaml
from qcli.units import parse_bytes, parse_params
from tests.conftest import FIXTURES


def test_alias_bomb_is_refused_at_once_naming_the_key():
    levels = ["&a0 [" + ",".join(["x"] * 9) + "]"]
    levels += [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    start = time.monotonic()
    with pytest.raises(UsageError, match=r"p\.yaml: dtype\[\d\]: aliases expand to more than"):
        load_yaml("name: b\ndtype: [" + ", ".join(levels) + "]\n", "p.yaml")
    assert time.monotonic() - start < 1


def test_shared_aliases_within_the_limit_and_plain_presets_load():
    assert load_yaml("a: &x [1, 2]\nb: *x\n", "p.yaml") == {"a": [1, 2], "b": [1, 2]}
    wide = load_yaml("v: [" + ",".join(["1"] * (MAX_VALUES // 2 - 2)) + "]", "p.yaml")
    assert len(wide["v"]) == MAX_VALUES // 2 - 2


@pytest.mark.parametrize(
    ("text", "needle"), [("a: &x [*x]", "refers to itself"), ("a: " + "[" * 40 + "]" * 40, "deeper than")]
)
def test_recursive_and_deep_yaml_are_refused(text, needle):
    with pytest.raises(UsageError, match=needle):
        load_yaml(text, "p.yaml")


def test_header_of_a_real_file_matches_what_safetensors_wrote(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"a": np.zeros((3, 5), np.float32), "b": np.zeros(7, np.float16)}, str(path), metadata={"k": "v"})
    assert read_header(path) == {"a": ("F32", (3, 5), 60), "b": ("F16", (7,), 14)}
    assert stored_bytes(tmp_path) == {"F32": 60, "F16": 14}


def _file(tmp_path, header: object, length: int | None = None, data: bytes = bytes(8)):
    raw = json.dumps(header).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


@pytest.mark.parametrize(
    ("header", "length", "needle"),
    [
        ([1], None, "not a JSON object"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": "x"}}, None, "data_offsets"),
        ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, None, "12 bytes"),
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, None, "outside"),
        ({"w": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, None, "unknown dtype"),
        ({}, 2**62, "exceeds"),
        ({}, 1000, "longer than the file"),
    ],
)
def test_bad_headers_name_the_file_and_the_problem(tmp_path, header, length, needle):
    path = _file(tmp_path, header, length)
    with pytest.raises(SafetensorsError, match=needle) as err:
        read_header(path)
    assert str(path) in err.value.message


def test_integers_past_pythons_digit_limit_are_bad_input_naming_the_file(tmp_path):
    """json.loads raises a plain ValueError (not JSONDecodeError) past sys.get_int_max_str_digits()."""
    huge = "9" * 5000
    config = tmp_path / "config.json"
    config.write_text('{"model_type": "llama", "foo": ' + huge + "}")
    with pytest.raises(UsageError, match=r"config\.json: a number with more than 4300 digits"):
        resolve(str(config))
    config.write_bytes(b'{"model_type": "\xff"}')  # UnicodeDecodeError is a ValueError too: still "not UTF-8"
    with pytest.raises(UsageError, match="not UTF-8 text"):
        resolve(str(config))
    raw = ('{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, ' + huge + "]}}").encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(8))
    with pytest.raises(SafetensorsError, match=r"model\.safetensors: .* a number with more than 4300 digits"):
        read_header(path)
    path.unlink()
    (tmp_path / "model.safetensors.index.json").write_text('{"metadata": {"total_size": ' + huge + "}}")
    with pytest.raises(SafetensorsError, match=r"index\.json: .* a number with more than 4300 digits"):
        checkpoint_files(tmp_path)


F32_2 = {"dtype": "F32", "shape": [2]}  # 8 bytes


@pytest.mark.parametrize(
    ("header", "data", "needle"),
    [
        ({"a": {**F32_2, "data_offsets": [0, 8]}, "b": {**F32_2, "data_offsets": [0, 8]}}, 8, "overlaps"),
        ({"a": {**F32_2, "data_offsets": [0, 8]}, "b": {**F32_2, "data_offsets": [4, 12]}}, 12, "overlaps"),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, 8, "gap after byte 0"),
        ({"a": {**F32_2, "data_offsets": [0, 8]}, "b": {**F32_2, "data_offsets": [12, 20]}}, 20, "gap after byte 8"),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 8, "cover 4 of the 8 data bytes"),
    ],
)
def test_data_offsets_must_tile_the_data_as_safetensors_requires(tmp_path, header, data, needle):
    path = _file(tmp_path, header, data=bytes(data))
    with pytest.raises(SafetensorsError, match=needle) as err:
        read_header(path)
    assert str(path) in err.value.message
    with pytest.raises(SafetensorError, match=r"invalid offset|not fully covered"):  # what safetensors says
        safe_open(str(path), "np")


def test_tiling_without_the_data_size_checks_overlaps_and_gaps_only():
    """A hub header (data size unknown): overlaps and gaps are refused, the end is not checked."""
    twice = {"a": {**F32_2, "data_offsets": [0, 8]}, "b": {**F32_2, "data_offsets": [0, 8]}}
    with pytest.raises(SafetensorsError, match="overlaps"):
        check_entries("repo: model.safetensors", twice, None)
    with pytest.raises(SafetensorsError, match="gap"):
        check_entries("repo: model.safetensors", {"a": {**F32_2, "data_offsets": [8, 16]}}, None)
    assert check_entries("r", {"a": {**F32_2, "data_offsets": [0, 8]}}, None) == {"a": ("F32", (2,), 8)}


def test_empty_tensors_and_any_order_tile(tmp_path):
    header = {
        "z": {**F32_2, "data_offsets": [8, 16]},
        "e1": {"dtype": "F32", "shape": [0], "data_offsets": [8, 8]},
        "a": {**F32_2, "data_offsets": [0, 8]},
        "e0": {"dtype": "F16", "shape": [0, 3], "data_offsets": [0, 0]},
    }
    path = _file(tmp_path, header, data=bytes(16))
    assert read_header(path)["z"] == ("F32", (2,), 8)
    with safe_open(str(path), "np") as f:  # safetensors agrees
        assert sorted(f.keys()) == ["a", "e0", "e1", "z"]


def test_a_fifo_is_refused_without_blocking(tmp_path):
    import os

    os.mkfifo(tmp_path / "model.safetensors")
    with pytest.raises(SafetensorsError, match="not a regular file"):
        read_header(tmp_path / "model.safetensors")


def test_every_fixture_config_validates():
    for path in FIXTURES.glob("*.json"):
        validate_config(json.loads(path.read_text()))


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"tie_word_embeddings": "false"}, "tie_word_embeddings: input should be a valid boolean"),
        ({"n_inner": 100.5}, "n_inner"),
        ({"num_hidden_layers": 10**9}, "num_hidden_layers"),
        ({"mlp_only_layers": 5}, "mlp_only_layers"),
        ({"text_config": {"hidden_size": "x"}}, "text_config.hidden_size"),
        ({"partial_rotary_factor": "0.5"}, "partial_rotary_factor"),
    ],
)
def test_config_keys_are_named(override, needle):
    with pytest.raises(UsageError, match=needle):
        validate_config({"model_type": "llama", **override})


def test_limits_name_the_flag():
    assert check_int("--gpus", 8, 1, 1024) == 8
    with pytest.raises(UsageError, match=r"--gpus 10000000 is out of range"):
        check_int("--gpus", 10_000_000, 1, 1024)
    with pytest.raises(UsageError, match=r"--context 100000000000… \(401 digits\)"):
        check_int("--context", 10**400, 1, 2**31)
    for bad in (float("nan"), float("inf"), 0.0, -5.0):
        with pytest.raises(UsageError, match="--timeout"):
            check_float("--timeout", bad, 0, 3600, lo_open=True)


@pytest.mark.parametrize("text", ["1,5b", "1,500", "7,24B"])
def test_a_comma_is_never_guessed(text):
    with pytest.raises(UsageError, match="comma"):
        parse_params(text)


def test_huge_exponents_are_out_of_range_not_overflow():
    for text in ("1e1000000", "9" * 5000):
        with pytest.raises(UsageError, match="--params"):
            parse_params(text)
    with pytest.raises(UsageError, match="--gpu"):
        parse_bytes("1e1000000GB", "--gpu")


def test_every_config_transformers_ships_passes_the_schema():
    """The schema refuses hostile values, never a real config: each config class's defaults validate."""
    import warnings

    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.utils import logging

    from qcli.model.config_schema import validate_config

    logging.set_verbosity_error()
    checked, refused = 0, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for model_type in sorted(CONFIG_MAPPING.keys()):
            try:
                cfg = json.loads(CONFIG_MAPPING[model_type]().to_json_string())
            except Exception:  # a config class that needs arguments: nothing to check
                continue
            checked += 1
            try:
                validate_config(cfg)
            except UsageError as exc:
                refused[model_type] = str(exc)
    assert checked > 300
    assert refused == {}


@pytest.mark.parametrize(
    ("qconfig", "expected"),
    [
        (
            {"quant_method": "bitsandbytes"},
            "m: config.json quantization_config: set load_in_4bit or load_in_8bit to true (or drop the quantization "
            "block)",
        ),
        (
            {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "y" * 100_000},
            "m: config.json quantization_config.bnb_4bit_quant_type: Input should be 'nf4' or 'fp4', got "
            "'yyyyyyyyyyyyyyyyyyyyyyyyyyyyy…",
        ),
    ],
)
def test_a_checkpoints_quantization_config_is_named_cleanly(qconfig, expected):
    from qcli.plan.prequantized import prequant_of

    with pytest.raises(UsageError) as err:
        prequant_of(qconfig, "m")
    assert err.value.message == expected


def test_an_unknown_quant_method_is_echoed_bounded():
    from qcli.plan.prequantized import prequant_of

    pre = prequant_of({"quant_method": "x" * 100_000}, "m")
    assert pre is not None and len(pre.method) == 40 and pre.method.endswith("…")
    assert len(pre.describe()) < 300 and len(pre.info().quant_method) == 40
    assert prequant_of({"quant_method": "gptq"}, "m").method == "gptq"
