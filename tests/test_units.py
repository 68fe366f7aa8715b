import pytest
from hypothesis import given
from hypothesis import strategies as st

from qcli.errors import UsageError
from qcli.units import GB, GIB, gb, gib, human_bytes, parse_bytes, parse_params


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8b", 8_000_000_000),
        ("8B", 8_000_000_000),
        ("7.24b", 7_240_000_000),
        ("125m", 125_000_000),
        ("1.5t", 1_500_000_000_000),
        ("8030261248", 8_030_261_248),
        ("8e9", 8_000_000_000),
        ("1.1e9", 1_100_000_000),
        (" 70B ", 70_000_000_000),
        ("3k", 3000),
    ],
)
def test_parse_params_accepts(text, expected):
    assert parse_params(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "banana", "-8b", "0", "0b", "nan", "inf", "-inf", "1e400", "8x", "8 bb", "1e16", "0.0000001", "8b8", "--8"],
)
def test_parse_params_rejects(text):
    with pytest.raises(UsageError):
        parse_params(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24GB", 24 * GB),
        ("80GiB", 80 * GIB),
        ("512MiB", 512 * 2**20),
        ("1.5TB", 1_500_000_000_000),
        ("15 GiB", 15 * GIB),
    ],
)
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["24", "GB", "-1GB", "0GB", "24 gigs", "nanGB"])
def test_parse_bytes_rejects(text):
    with pytest.raises(UsageError):
        parse_bytes(text)


def test_formatting_names_its_unit():
    assert gib(4.5e9) == "4.19 GiB"
    assert gb(4.5e9) == "4.50 GB"
    assert human_bytes(1536) == "1.50 KiB"


@given(st.integers(min_value=1, max_value=10**15))
def test_params_roundtrip_plain_integer(n):
    assert parse_params(str(n)) == n


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(["k", "m", "b"]))
def test_params_roundtrip_suffix(n, suffix):
    scale = {"k": 10**3, "m": 10**6, "b": 10**9}[suffix]
    if n * scale <= 10**15:
        assert parse_params(f"{n}{suffix}") == n * scale


@given(st.integers(min_value=1, max_value=2**30))
def test_bytes_roundtrip(n):
    assert parse_bytes(f"{n}B") == n
    assert parse_bytes(f"{n}GiB") == n * GIB
