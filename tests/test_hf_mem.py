"""qcli and hf-mem read the same loopback hub and agree: bytes stored per dtype, and the KV cache.

hf-mem (PyPI `hf-mem`, pinned in .ci/constraints.txt) is a second, independent reader of hub repos: it lists the
repo with the tree API, reads each safetensors header with a Range request and sums prod(shape) × dtype size per
dtype; qcli sums the headers' data_offsets spans. Both run against tests/hubserver.py. qcli goes through
huggingface_hub, pointed at the loopback hub. hf-mem hard-codes https://huggingface.co in its URLs, so its httpx2
client gets a transport that sends those requests to the loopback hub (path and query kept), lets the hub's
redirects to the loopback CDN through and refuses any other host. That is the only change to hf-mem's run: its
own CLI parses the flags and prints the JSON compared here.
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import httpx2
import pytest

from tests import hubserver
from tests.conftest import plan
from tests.hubserver import GOOD_TOKEN, HubServer
from tests.test_hub_path import data_offsets_bytes

hf_mem_run = pytest.importorskip("hf_mem.run", reason="hf-mem is not installed (it comes with qcli's dev extra)")
hf_mem_cli = pytest.importorskip("hf_mem.cli", reason="hf-mem is not installed (it comes with qcli's dev extra)")

# The loopback hub's pytest fixtures, bound here so that pytest finds them in this module.
hub, hub_repos, hub_server = hubserver.hub, hubserver.hub_repos, hubserver.hub_server


class ToLoopbackHub(httpx2.AsyncBaseTransport):
    """An httpx2 transport that sends https://huggingface.co requests to the loopback hub instead."""

    def __init__(self, hub_url: str, **transport_options: object) -> None:
        self.hub = httpx2.URL(hub_url)
        self.inner = httpx2.AsyncHTTPTransport(**transport_options)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.host == "huggingface.co":
            request.url = request.url.copy_with(scheme=self.hub.scheme, host=self.hub.host, port=self.hub.port)
            request.headers["Host"] = request.url.netloc.decode("ascii")
        elif request.url.host != self.hub.host:  # the CDN redirect is loopback too; nothing else may leave
            raise httpx2.ConnectError(f"hf-mem asked for {request.url}, not the loopback hub", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def hf_mem(hub: HubServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run hf-mem's CLI in-process against the loopback hub; return its `--json-output` as a dict."""

    class LoopbackClient(httpx2.AsyncClient):
        # hf_mem.run.arun builds one AsyncClient(limits=..., timeout=..., http2=True, follow_redirects=True)
        # per run; the transport keeps its limits and http2 setting.
        def __init__(self, **kwargs) -> None:
            options = {k: kwargs[k] for k in ("limits", "http2") if k in kwargs}
            super().__init__(transport=ToLoopbackHub(hub.url, **options), **kwargs)

    # hf_mem.run's own `httpx2` name, not the module huggingface_hub shares: qcli's requests are untouched.
    monkeypatch.setattr(hf_mem_run, "httpx2", SimpleNamespace(**{**vars(httpx2), "AsyncClient": LoopbackClient}))

    def run(*args: str) -> dict:
        monkeypatch.setattr(sys, "argv", ["hf-mem", *args, "--json-output"])
        capsys.readouterr()
        hf_mem_cli.main()
        return json.loads(capsys.readouterr().out)

    return run


def hf_mem_bytes_by_dtype(result: dict) -> dict[str, int]:
    """Return hf-mem's `--details` bytes per dtype, summed over its components."""
    totals: dict[str, int] = {}
    for component in result["memory"]["components"].values():
        for dtype, counts in component["dtypes"].items():
            totals[dtype] = totals.get(dtype, 0) + counts["bytes"]
    return totals


@pytest.mark.parametrize(
    ("repo_id", "token"),
    [
        ("acme/tiny-llama", None),  # bf16, one model.safetensors
        ("acme/tiny-llama-sharded", None),  # two shards and model.safetensors.index.json
        ("acme/tiny-llama-nf4", None),  # bitsandbytes nf4: U8 packed weights, F32 constants, BF16 the rest
        ("acme/gated-llama", GOOD_TOKEN),  # both send the token
    ],
)
def test_stored_bytes_per_dtype_agree_with_hf_mem(cli, hf_mem, hub: HubServer, hub_repos, repo_id, token):
    truth = data_offsets_bytes(hub_repos[repo_id])
    token_args = ("--hf-token", token) if token else ()
    theirs = hf_mem("--model-id", repo_id, "--details", *token_args)
    assert any(r.path.startswith(f"/api/models/{repo_id}/tree/main") for r in hub.log)  # it asked the loopback hub
    assert hub.weight_downloads() == []  # headers only, on both sides

    token_args = ("--token", token) if token else ()
    r = cli("estimate", repo_id, "--json", *token_args)
    assert r.code == 0, r.err
    ours = r.json()["model"]
    assert ours["stored_bytes_by_dtype"] == hf_mem_bytes_by_dtype(theirs) == truth
    assert ours["stored_bytes"] == theirs["memory"]["bytes"] == theirs["total_memory"] == sum(truth.values())
    assert hub.weight_downloads() == []


BF16_64_BY_3 = ("--bits", "bf16", "--context", "64", "--batch", "3")


@pytest.mark.filterwarnings("ignore::UserWarning")  # hf-mem warns that --experimental is experimental
@pytest.mark.parametrize(
    ("repo_id", "hf_mem_args", "qcli_args"),
    [
        # hf-mem's default length is max_position_embeddings (128), qcli's context limit for the model.
        ("acme/tiny-llama", (), ("--bits", "bf16", "--context", "128")),
        ("acme/tiny-llama", ("--max-model-len", "64", "--batch-size", "3"), BF16_64_BY_3),
        # hf-mem's `auto` refuses a bitsandbytes quantization_config, so the dtype qcli uses is named.
        (
            "acme/tiny-llama-nf4",
            ("--max-model-len", "64", "--batch-size", "3", "--kv-cache-dtype", "bfloat16"),
            ("--context", "64", "--batch", "3"),
        ),
    ],
)
def test_kv_cache_agrees_with_hf_mem_for_full_attention(cli, hf_mem, hub: HubServer, repo_id, hf_mem_args, qcli_args):
    """hf-mem's `--experimental` KV cache equals qcli's for the tiny Llama, to the byte.

    hf-mem reserves `max_model_len` tokens per sequence, as vLLM does: 2 (K and V) × tokens × kv heads × head_dim ×
    dtype bytes × batch, summed over the full-attention layers (hf_mem/safetensors/kv_cache.py). qcli's
    `--context N --batch B` prices N tokens of K and V per layer for B sequences. For a model whose every layer is
    full attention, with the same length, batch and dtype, that is the same number. Where they would part: with no
    `--max-model-len` hf-mem takes max_position_embeddings (qcli needs `--context`, given here as the model's
    limit); its `auto` KV dtype comes from the config's `dtype` and refuses bitsandbytes checkpoints (qcli uses the
    load dtype, bnb_4bit_compute_dtype for nf4); and it counts sliding-window layers of hybrid models at the full
    length, which the tiny Llama has none of.
    """
    theirs = hf_mem("--model-id", repo_id, "--experimental", "--details", *hf_mem_args)
    r = cli("estimate", repo_id, "--json", *qcli_args)
    assert r.code == 0, r.err
    data = r.json()
    ours = plan(data)
    (kv,) = [c for c in ours["components"] if c["kind"] == "kv_cache"]

    assert theirs["kv_cache"]["max_model_len"] == data["context_tokens"] <= data["model"]["context_limit_tokens"]
    assert theirs["kv_cache"]["batch_size"] == data["batch_size"]
    assert (theirs["kv_cache"]["dtype"], kv["dtype"]) == ("BF16", "bfloat16")
    # tiny Llama: 2 layers, 2 kv heads, head_dim 16, bf16
    by_hand = 2 * 2 * 2 * 16 * 2 * data["context_tokens"] * data["batch_size"]
    assert theirs["kv_cache"]["bytes"] == ours["kv_cache_bytes"] == kv["size_bytes"] == by_hand


# -- repo shapes beyond the tiny Llama: both readers against a second loopback hub -------------------------


def _st(tensors: dict[str, tuple[str, list[int]]], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file of zeros: name -> (dtype, shape), laid out in order; `__metadata__` when given."""
    import struct
    from math import prod

    from qcli.model.safetensors_header import DTYPE_BYTES

    header: dict = {} if metadata is None else {"__metadata__": metadata}
    at = 0
    for name, (dtype, shape) in tensors.items():
        n = prod(shape) * DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + n]}
        at += n
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(at)


def _shape_repos(config: bytes) -> dict[str, hubserver.Repo]:
    shard1 = _st({"a.weight": ("BF16", [64, 64]), "a.norm": ("F32", [64])}, {"format": "pt"})
    shard2 = _st({"b.weight": ("BF16", [64, 64]), "b.norm": ("F32", [64])}, {"format": "pt"})
    names = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    weight_map = {"a.weight": names[0], "a.norm": names[0], "b.weight": names[1], "b.norm": names[1]}
    sharded = {
        "config.json": config,
        "model.safetensors.index.json": json.dumps({"weight_map": weight_map}).encode(),
        names[0]: shard1,
        names[1]: shard2,
    }
    one = {"config.json": config}
    fp8 = {"w": ("F8_E4M3", [64, 64]), "v": ("F8_E5M2", [32, 64]), "scale": ("F32", [1]), "e": ("F8_E8M0", [4])}
    int8 = {"w": ("I8", [64, 64]), "SCB": ("F32", [64]), "packed": ("U8", [2048, 1]), "absmax": ("F32", [32])}
    sub_map = {"a": "weights/s1.safetensors", "b": "weights/s2.safetensors"}
    twice = _st({"a.weight": ("BF16", [64, 64]), "b.weight": ("BF16", [64, 64]), "b.norm": ("F32", [64])})
    return {
        "shapes/bool-mask": hubserver.Repo(
            {**one, "model.safetensors": _st({"m": ("BOOL", [10, 10]), "w": ("F16", [4])})}
        ),
        "shapes/name-in-two-shards": hubserver.Repo({**sharded, names[1]: twice}),
        "shapes/mixed-shards": hubserver.Repo(sharded),  # F32 norms beside BF16, no index metadata
        "shapes/fp8": hubserver.Repo({**one, "model.safetensors": _st(fp8)}),
        "shapes/int8-and-packed-4bit": hubserver.Repo({**one, "model.safetensors": _st(int8)}),
        "shapes/i64-no-metadata": hubserver.Repo({**one, "model.safetensors": _st({"p": ("I64", [128])})}),
        "shapes/zero-elements": hubserver.Repo(
            {**one, "model.safetensors": _st({"e": ("F32", [0, 64]), "w": ("BF16", [4]), "s": ("F32", [])})}
        ),
        # Mistral ships consolidated.safetensors beside the shards: neither transformers nor either reader counts it
        "shapes/consolidated-beside-shards": hubserver.Repo(
            {**sharded, "consolidated.safetensors": _st({"w": ("BF16", [64, 64])})}
        ),
        # the index lists a shard for several tensors, and shards in a folder
        "shapes/shards-in-a-folder": hubserver.Repo(
            {
                **one,
                "model.safetensors.index.json": json.dumps({"weight_map": sub_map}).encode(),
                "weights/s1.safetensors": _st({"a": ("BF16", [8])}),
                "weights/s2.safetensors": _st({"b": ("F32", [8])}),
            }
        ),
    }


@pytest.fixture(scope="module")
def shapes_server(hub_repos) -> HubServer:
    with HubServer(_shape_repos(hub_repos["acme/tiny-llama"].files["config.json"])) as server:
        yield server


@pytest.mark.parametrize(
    "repo_id",
    [
        "shapes/mixed-shards",
        "shapes/fp8",
        "shapes/int8-and-packed-4bit",
        "shapes/i64-no-metadata",
        "shapes/zero-elements",
        "shapes/consolidated-beside-shards",
        "shapes/shards-in-a-folder",
    ],
)
def test_stored_bytes_agree_with_hf_mem_across_repo_shapes(cli, shapes_server, monkeypatch, capsys, tmp_path, repo_id):
    """Per dtype and in all, both equal the data_offsets spans of the files transformers loads."""
    hubserver.point_hub_at(monkeypatch, shapes_server.url, tmp_path / "hf-home")
    monkeypatch.setenv("QCLI_CACHE", str(tmp_path / "qcli-cache"))
    loaded = {n: d for n, d in shapes_server.repos[repo_id].files.items() if n != "consolidated.safetensors"}
    truth = data_offsets_bytes(hubserver.Repo(loaded))

    class LoopbackClient(httpx2.AsyncClient):
        def __init__(self, **kwargs) -> None:
            options = {k: kwargs[k] for k in ("limits", "http2") if k in kwargs}
            super().__init__(transport=ToLoopbackHub(shapes_server.url, **options), **kwargs)

    monkeypatch.setattr(hf_mem_run, "httpx2", SimpleNamespace(**{**vars(httpx2), "AsyncClient": LoopbackClient}))
    monkeypatch.setattr(sys, "argv", ["hf-mem", "--model-id", repo_id, "--details", "--json-output"])
    capsys.readouterr()
    hf_mem_cli.main()
    theirs = json.loads(capsys.readouterr().out)

    r = cli("estimate", repo_id, "--json")
    assert r.code == 0, r.err
    ours = r.json()["model"]
    assert ours["stored_bytes_by_dtype"] == hf_mem_bytes_by_dtype(theirs) == truth
    assert ours["stored_bytes"] == theirs["memory"]["bytes"] == sum(truth.values())
    assert shapes_server.weight_downloads() == []


@pytest.mark.parametrize(
    ("repo_id", "stored"),
    [
        # hf-mem 0.5.6 stops: "DTYPE=BOOL NOT HANDLED" (hf_mem/safetensors/types.py knows no BOOL)
        ("shapes/bool-mask", {"BOOL": 100, "F16": 8}),
        # hf-mem merges the shards' headers by tensor name (`acc | m` in hf_mem/run.py), so a.weight, stored in
        # both shards, counts once (16,384 BF16 bytes): the files hold 24,576
        ("shapes/name-in-two-shards", {"BF16": 24_576, "F32": 512}),
    ],
)
def test_stored_bytes_where_hf_mem_is_wrong_are_the_data_offsets_spans(
    cli, shapes_server, monkeypatch, tmp_path, repo_id, stored
):
    hubserver.point_hub_at(monkeypatch, shapes_server.url, tmp_path / "hf-home")
    monkeypatch.setenv("QCLI_CACHE", str(tmp_path / "qcli-cache"))
    assert data_offsets_bytes(shapes_server.repos[repo_id]) == stored
    r = cli("estimate", repo_id, "--json")
    assert r.code == 0, r.err
    assert r.json()["model"]["stored_bytes_by_dtype"] == stored
