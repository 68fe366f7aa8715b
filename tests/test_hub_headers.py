"""A safetensors header or index read from the hub is checked by the code that checks a local file, and gets the
same message: qcli reads the header's bytes with Range requests through huggingface_hub's HTTP client (the file's
size from Content-Range) instead of huggingface_hub's `get_safetensors_metadata`, which decoded a non-UTF-8
header with errors="ignore", read a header length past the file's end as the bytes that were there, passed
`__metadata__` of any type, and failed on a JSON list or deep nesting with AttributeError or RecursionError.
A hub repo's integer or boolean `*.weight` without a quantization_config is refused by load as a local one is.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import hubserver
from tests.hubserver import HubServer, Repo, point_hub_at

hub_repos = hubserver.hub_repos


def _file(raw: bytes, data: int = 0, length: int | None = None) -> bytes:
    return struct.pack("<Q", len(raw) if length is None else length) + raw + bytes(data)


def _st(header: object, data: int) -> bytes:
    return _file(json.dumps(header).encode(), data)


def _t(dtype: str, n: int, begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": [n], "data_offsets": [begin, end]}


# name -> (the file, the reason both paths give)
HOSTILE = {
    "not-utf8": (
        _file(b'{"a\xff": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', 4),
        "the header is not UTF-8",
    ),
    "json-list": (_st([1, 2, 3], 0), "the header is not a JSON object"),
    "length-past-file": (_file(b"{}", 0, length=5000), "header length 5,000 is longer than the file (10 bytes)"),
    "offsets-past-data": (
        _st({"w": _t("F32", 2, 0, 8)}, 4),
        "tensor 'w': data_offsets [0, 8] lie outside the 4 data bytes",
    ),
    "data-past-offsets": (_st({"w": _t("F32", 2, 0, 8)}, 16), "the tensors' data_offsets cover 8 of the 16 data bytes"),
    "metadata-a-list": (_st({"__metadata__": ["x"], "w": _t("F32", 1, 0, 4)}, 4), "__metadata__ must map strings"),
    "metadata-int-value": (
        _st({"__metadata__": {"format": 1}, "w": _t("F32", 1, 0, 4)}, 4),
        "__metadata__ must map strings",
    ),
    "entry-a-list": (_st({"w": [0, 4]}, 4), "tensor 'w' is not an object"),
    "no-dtype": (_st({"w": {"shape": [1], "data_offsets": [0, 4]}}, 4), "tensor 'w': unknown dtype 'None'"),
    "deep-nesting": (_file(b'{"x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"), "the header is not valid JSON"),
    "huge-integer": (
        _file(b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}', 4),
        "the header has a number with more than 4300 digits",
    ),
    "five-bytes": (b"\x01\x02\x03\x04\x05", "5 bytes, shorter than the 8-byte header length"),
    "empty-file": (b"", "0 bytes, shorter than the 8-byte header length"),
}
GOOD_OUT_OF_ORDER = _st({"b": _t("F32", 2, 8, 16), "a": _t("F32", 2, 0, 8)}, 16)  # listed out of order: valid
INDEXES = {
    "empty-weight-map": ({"weight_map": {}}, "weight_map is empty: it names no shard to load"),
    "index-a-list": ([1], "weight_map must map tensor names to file names"),
    "map-of-ints": ({"weight_map": {"w": 1}}, "weight_map must map tensor names to file names"),
}
I32_WEIGHT = _st({"model.embed_tokens.weight": _t("I32", 4, 0, 16)}, 16)


@pytest.fixture(scope="module")
def repos(hub_repos: dict[str, Repo]) -> dict[str, Repo]:
    config = hub_repos["acme/tiny-llama"].files["config.json"]
    out = {
        f"st/{name}": Repo({"config.json": config, "model.safetensors": data}) for name, (data, _) in HOSTILE.items()
    }
    out["st/out-of-order"] = Repo({"config.json": config, "model.safetensors": GOOD_OUT_OF_ORDER})
    for name, (index, _) in INDEXES.items():
        out[f"ix/{name}"] = Repo({"config.json": config, "model.safetensors.index.json": json.dumps(index).encode()})
    out["int/plain"] = Repo({"config.json": config, "model.safetensors": I32_WEIGHT})
    out["int/modelopt"] = Repo({"config.json": config, "model.safetensors": I32_WEIGHT, "hf_quant_config.json": b"{}"})
    with_q = {**json.loads(config), "quantization_config": {"quant_method": "bitsandbytes", "load_in_8bit": True}}
    out["int/quantized"] = Repo({"config.json": json.dumps(with_q).encode(), "model.safetensors": I32_WEIGHT})
    out["int/sharded"] = Repo(
        {
            "config.json": config,
            "model.safetensors.index.json": json.dumps(
                {"weight_map": {"a.weight": "a.safetensors", "model.embed_tokens.weight": "b.safetensors"}}
            ).encode(),
            "a.safetensors": _st({"a.weight": _t("F32", 1, 0, 4)}, 4),
            "b.safetensors": I32_WEIGHT,
        }
    )
    good = {"config.json": config, "model.safetensors": _st({"w": _t("F32", 1, 0, 4)}, 4)}
    for fault in (*hubserver.CODED_ERRORS, *hubserver.HEADER_FAULTS, "relative"):
        out[f"ans/{fault}"] = Repo(dict(good), faults={"config.json": fault})
    return out


@pytest.fixture(scope="module")
def server(repos: dict[str, Repo]) -> Iterator[HubServer]:
    with HubServer(repos) as s:
        yield s


@pytest.fixture
def hub(server: HubServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> HubServer:
    point_hub_at(monkeypatch, server.url, tmp_path / "hf-home")
    monkeypatch.setenv("QCLI_CACHE", str(tmp_path / "qcli-cache"))
    server.clear_log()
    return server


def _one_line(r) -> str:
    lines = [x for x in r.err.splitlines() if x.strip()]
    assert r.code == 2 and len(lines) == 1, (r.code, r.out, r.err)
    assert "Traceback" not in r.err
    return lines[0]


def _local(repo: Repo, where: Path) -> Path:
    where.mkdir()
    for name, data in repo.files.items():
        (where / name).write_bytes(data)
    return where


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_header_gets_the_local_message_from_the_hub(cli, hub: HubServer, name, tmp_path):
    reason = f"model.safetensors: not a valid safetensors file: {HOSTILE[name][1]}"
    line = _one_line(cli("estimate", f"st/{name}"))
    assert f"st/{name} at main: {reason}" in line, line
    local = _local(hub.repos[f"st/{name}"], tmp_path / name)
    assert f"{local}/{reason}" in _one_line(cli("estimate", str(local)))
    assert hub.weight_downloads() == []  # the header's bytes only, never the whole file


def test_tensors_listed_out_of_order_are_read_on_both_paths(cli, hub: HubServer, tmp_path):
    r = cli("estimate", "st/out-of-order", "--json")
    assert r.code == 0, r.err
    assert r.json()["model"]["stored_bytes_by_dtype"] == {"F32": 16}
    r = cli("estimate", str(_local(hub.repos["st/out-of-order"], tmp_path / "local")), "--json")
    assert r.code == 0 and r.json()["model"]["stored_bytes_by_dtype"] == {"F32": 16}, r.err


@pytest.mark.parametrize("name", sorted(INDEXES))
def test_an_index_that_names_no_shard_is_refused_on_both_paths(cli, hub: HubServer, name, tmp_path):
    reason = f"model.safetensors.index.json: not a valid index: {INDEXES[name][1]}"
    assert f"ix/{name} at main: {reason}" in _one_line(cli("estimate", f"ix/{name}"))
    local = _local(hub.repos[f"ix/{name}"], tmp_path / name)
    assert f"{local}/{reason}" in _one_line(cli("estimate", str(local)))  # an empty map was an IndexError here


NEEDLE = "stores model.embed_tokens.weight as I32, and config.json has no quantization_config"


@pytest.mark.parametrize("repo", ["int/plain", "int/sharded"])
def test_load_refuses_a_hub_repo_with_integer_weights_as_it_refuses_a_local_one(cli, hub: HubServer, repo, tmp_path):
    file = "b.safetensors" if repo.endswith("sharded") else "model.safetensors"
    assert f"{repo}: {file} {NEEDLE}" in _one_line(cli("load", repo, "--preset", "bf16"))
    assert hub.weight_downloads() == []  # refused from the headers, before any weight is downloaded
    r = cli("estimate", repo, "--json")  # estimate sizes it, as it does a local copy
    assert r.code == 0, r.err
    local = _local(hub.repos[repo], tmp_path / "local")
    assert f"{local}: {file} {NEEDLE}" in _one_line(cli("load", str(local), "--preset", "bf16"))


def test_a_warm_load_refuses_from_the_recorded_headers(cli, hub: HubServer):
    assert cli("estimate", "int/plain").code == 0  # records the commit's headers, the finding with them
    hub.clear_log()
    assert NEEDLE in _one_line(cli("load", "int/plain", "--preset", "bf16"))
    assert [r for r in hub.log if r.host == "cdn"] == []  # no header read again


@pytest.mark.parametrize("repo", ["int/modelopt", "int/quantized"])
def test_integer_weights_with_a_quantization_config_pass_the_check(hub: HubServer, repo):
    from qcli.model.resolve import resolve
    from qcli.run.checkpoint import check_weight_dtypes

    source = resolve(repo)
    assert source.non_float_weight == ("model.safetensors", "model.embed_tokens.weight", "I32")
    check_weight_dtypes(repo, source)  # no error: the quantization config says how to read them


# -- odd answers to config.json's request: each named by its real cause, the token never shown --------------

GARBAGE_TOKEN = "hf_qcliGarbageTokenNeverShown42"


@pytest.mark.parametrize(
    ("fault", "needle"),
    [
        ("bad-commit", "without the hub's headers (X-Repo-Commit 'not-a-sha' is not a commit sha)"),  # was: revision
        ("no-etag", "without the hub's headers (no ETag header)"),  # was: no X-Repo-Commit or ETag header
        ("401", "refused access to ans/401 (HTTP 401)"),
        ("gated-403", "is a gated model and this token has not been granted access"),
        ("revision-404", "revision 'main' not found"),
        ("entry-404", "has no config.json at revision main"),
        ("repo-404", "not found on the hub"),
        ("429-all", "rate-limiting requests (HTTP 429)"),
    ],
)
def test_an_odd_answer_names_its_cause_and_never_the_token(cli, hub: HubServer, monkeypatch, fault, needle):
    monkeypatch.setenv("HF_TOKEN", GARBAGE_TOKEN)
    r = cli("estimate", f"ans/{fault}", "--json")
    assert needle in _one_line(r)
    assert GARBAGE_TOKEN not in r.out + r.err


@pytest.mark.parametrize("fault", ["weak-etag", "relative"])
def test_a_weak_etag_or_a_relative_redirect_is_read(cli, hub: HubServer, fault):
    r = cli("estimate", f"ans/{fault}", "--json")
    assert r.code == 0, r.err
    assert r.json()["model"]["stored_bytes_by_dtype"] == {"F32": 4}
