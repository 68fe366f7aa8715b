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
import struct
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


def _st(tensors: dict[str, tuple[str, list[int]]], metadata: dict | None = None, header_bytes: int = 0) -> bytes:
    """A safetensors file of zeros: name -> (dtype, shape), laid out in order; `__metadata__` when given; the
    JSON header padded with spaces to `header_bytes` when given (sub-byte dtypes rounded up, as no saver does)."""
    import struct
    from math import prod

    from qcli.model.safetensors_header import DTYPE_BITS

    header: dict = {} if metadata is None else {"__metadata__": metadata}
    at = 0
    for name, (dtype, shape) in tensors.items():
        n = -(-prod(shape) * DTYPE_BITS[dtype] // 8)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + n]}
        at += n
    raw = json.dumps(header).encode()
    raw += b" " * max(0, header_bytes - len(raw))
    return struct.pack("<Q", len(raw)) + raw + bytes(at)


def _index(weight_map: dict[str, str], total_size: object = None) -> bytes:
    data: dict = {"weight_map": weight_map}
    if total_size is not None:
        data["metadata"] = {"total_size": total_size}
    return json.dumps(data).encode()


def loaded_files(repo: hubserver.Repo) -> hubserver.Repo:
    """The repo's files transformers loads: model.safetensors, else the shards its index lists."""
    files = repo.files
    if "model.safetensors" in files:
        return hubserver.Repo({"model.safetensors": files["model.safetensors"]})
    shards = set(json.loads(files["model.safetensors.index.json"])["weight_map"].values())
    return hubserver.Repo({n: d for n, d in files.items() if n in shards})


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
    many = {f"model-{i:05d}-of-00150.safetensors": _st({f"t{i}": ("BF16", [8])}) for i in range(1, 151)}
    bnb = {
        "q.weight": ("U8", [2048, 1]),
        "q.weight.absmax": ("F32", [64]),
        "q.weight.quant_map": ("F32", [16]),
        "q.weight.quant_state.bitsandbytes__nf4": ("U8", [83]),
        "norm.weight": ("BF16", [64]),
    }
    return {
        # bitsandbytes nf4 as transformers saves it: packed U8 weights and U8 quant_state entries beside F32
        "shapes/bnb-quant-state": hubserver.Repo({**one, "model.safetensors": _st(bnb, {"format": "pt"})}),
        # a shard holds a tensor its index does not list: transformers loads the shard, both count it
        "shapes/shard-holds-more-than-its-index": hubserver.Repo(
            {
                **one,
                "model.safetensors.index.json": _index({"a": "s1.safetensors"}),
                "s1.safetensors": _st({"a": ("BF16", [8]), "extra": ("F32", [4])}),
            }
        ),
        # model.safetensors and an index: transformers loads model.safetensors, the index's shards are ignored
        "shapes/single-beside-an-index": hubserver.Repo(
            {
                **one,
                "model.safetensors": _st({"w": ("BF16", [8])}),
                "model.safetensors.index.json": _index({"a": "s1.safetensors"}),
                "s1.safetensors": _st({"a": ("F32", [100])}),
            }
        ),
        "shapes/150-shards": hubserver.Repo(
            {**one, "model.safetensors.index.json": _index({f"t{i}": n for i, n in enumerate(many, 1)}), **many}
        ),
        # headers past the first Range request's 100,000 bytes: a second request reads the rest
        "shapes/huge-header": hubserver.Repo(
            {**one, "model.safetensors": _st({f"layers.{i}.weight": ("BF16", [2]) for i in range(4000)})}
        ),
        # hf-mem's first Range is bytes=0-100000 and it slices [8 : length + 8] of it without a second request
        # while length < 100,000: a header of 99,994-99,999 bytes is cut short and not JSON
        "shapes/header-of-99996-bytes": hubserver.Repo(
            {**one, "model.safetensors": _st({"w": ("BF16", [8])}, {"pad": "x" * (99_996 - 92)})}
        ),
        "shapes/header-of-100000-bytes": hubserver.Repo(
            {**one, "model.safetensors": _st({"w": ("BF16", [8])}, header_bytes=100_000)}
        ),
        # the index's metadata.total_size is not what the shards hold: the headers are reported, with a note
        "shapes/total-size-disagrees": hubserver.Repo(
            {
                **one,
                "model.safetensors.index.json": _index({"a": "s1.safetensors"}, 999),
                "s1.safetensors": _st({"a": ("BF16", [8])}),
            }
        ),
        # dtypes hf-mem 0.5.6 does not know (types.py: "DTYPE=F4 NOT HANDLED"); safetensors 0.8 loads them
        "shapes/sub-byte-and-complex": hubserver.Repo(
            {
                **one,
                "model.safetensors": _st(
                    {"a": ("F4", [4, 4]), "b": ("F6_E2M3", [4]), "c": ("C64", [2]), "d": ("F8_E4M3FNUZ", [3])}
                ),
            }
        ),
        # 15 F4 values are 60 bits: safetensors refuses the file ("does not end up at a byte boundary")
        "shapes/f4-odd-count": hubserver.Repo({**one, "model.safetensors": _st({"a": ("F4", [3, 5])})}),
        "shapes/gguf-only": hubserver.Repo({**one, "model-Q4_K_M.gguf": b"GGUF" + bytes(60)}),
        "shapes/bin-only": hubserver.Repo({**one, "pytorch_model.bin": bytes(100)}),
        "shapes/bin-sharded": hubserver.Repo(
            {
                **one,
                "pytorch_model-00001-of-00002.bin": bytes(10),
                "pytorch_model-00002-of-00002.bin": bytes(10),
                "pytorch_model.bin.index.json": _index(
                    {"a": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin"}, 1234
                ),
            }
        ),
        "shapes/config-in-a-subfolder": hubserver.Repo(
            {"llm/config.json": config, "llm/model.safetensors": _st({"w": ("BF16", [8])}), "README.md": b"hi"}
        ),
        "shapes/lora-adapter": hubserver.Repo(
            {
                "adapter_config.json": json.dumps(
                    {"base_model_name_or_path": "meta-llama/Llama-3.1-8B", "peft_type": "LORA", "r": 8}
                ).encode(),
                "adapter_model.safetensors": _st({"base_model.model.q_proj.lora_A.weight": ("F32", [8, 64])}),
            }
        ),
        # Mistral's own format only (no config.json): params.json and consolidated.safetensors
        "shapes/mistral-format-only": hubserver.Repo(
            {"params.json": b'{"dim": 64}', "consolidated.safetensors": _st({"w": ("BF16", [8])})}
        ),
        "shapes/gguf-without-config": hubserver.Repo({"tiny.Q4_0.gguf": b"GGUF" + bytes(60), "README.md": b"hi"}),
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
        "shapes/bnb-quant-state",
        "shapes/shard-holds-more-than-its-index",
        "shapes/single-beside-an-index",
        "shapes/150-shards",
        "shapes/huge-header",
        "shapes/header-of-100000-bytes",
        "shapes/total-size-disagrees",
    ],
)
def test_stored_bytes_agree_with_hf_mem_across_repo_shapes(cli, shapes_server, monkeypatch, capsys, tmp_path, repo_id):
    """Per dtype and in all, both equal the data_offsets spans of the files transformers loads."""
    hubserver.point_hub_at(monkeypatch, shapes_server.url, tmp_path / "hf-home")
    monkeypatch.setenv("QCLI_CACHE", str(tmp_path / "qcli-cache"))
    truth = data_offsets_bytes(loaded_files(shapes_server.repos[repo_id]))

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
        # hf-mem 0.5.6 stops: "DTYPE=F4 NOT HANDLED" (nor F6_*, C64, the FNUZ float8s); 16 F4 values are 8 bytes
        ("shapes/sub-byte-and-complex", {"F4": 8, "F6_E2M3": 3, "C64": 16, "F8_E4M3FNUZ": 3}),
        # hf-mem 0.5.6: JSONDecodeError (its first request's bytes cut the header short; see the repo)
        ("shapes/header-of-99996-bytes", {"BF16": 16}),
    ],
)
def test_stored_bytes_where_hf_mem_is_wrong_are_the_data_offsets_spans(
    cli, shapes_server, monkeypatch, tmp_path, repo_id, stored
):
    if repo_id == "shapes/header-of-99996-bytes":
        (length,) = struct.unpack("<Q", shapes_server.repos[repo_id].files["model.safetensors"][:8])
        assert length == 99_996
    hubserver.point_hub_at(monkeypatch, shapes_server.url, tmp_path / "hf-home")
    monkeypatch.setenv("QCLI_CACHE", str(tmp_path / "qcli-cache"))
    assert data_offsets_bytes(shapes_server.repos[repo_id]) == stored
    r = cli("estimate", repo_id, "--json")
    assert r.code == 0, r.err
    assert r.json()["model"]["stored_bytes_by_dtype"] == stored


def _shapes_cli(cli, shapes_server: HubServer, monkeypatch, tmp_path, *args: str):
    hubserver.point_hub_at(monkeypatch, shapes_server.url, tmp_path / "hf-home")
    monkeypatch.setenv("QCLI_CACHE", str(tmp_path / "qcli-cache"))
    return cli(*args)


def test_a_sub_byte_tensor_that_ends_inside_a_byte_is_refused_as_safetensors_refuses_it(
    cli, shapes_server, monkeypatch, tmp_path
):
    """15 F4 values are 60 bits; safetensors 0.8 will not open such a file, so transformers cannot load it (qcli
    rounded it up to 8 bytes and went on)."""
    from safetensors import SafetensorError, safe_open

    data = shapes_server.repos["shapes/f4-odd-count"].files["model.safetensors"]
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "model.safetensors").write_bytes(data)
    with pytest.raises(SafetensorError, match="byte boundary"):
        safe_open(str(tmp_path / "local" / "model.safetensors"), "pt")
    r = _shapes_cli(cli, shapes_server, monkeypatch, tmp_path, "estimate", "shapes/f4-odd-count")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "shape [3, 5] of F4 is 60 bits, not a whole number of bytes" in r.err
    (tmp_path / "local" / "config.json").write_bytes(shapes_server.repos["shapes/f4-odd-count"].files["config.json"])
    local = cli("estimate", str(tmp_path / "local"))
    assert local.code == 2 and "60 bits" in local.err, local.err


@pytest.mark.parametrize(
    ("repo_id", "needles"),
    [
        # hf-mem sums the GGUF file's tensors instead; transformers would not load it without gguf_file=…
        ("shapes/gguf-only", ("GGUF weights (model-Q4_K_M.gguf)", "gguf_file=")),
        # hf-mem refuses both: "NONE OF `model.safetensors`, … FILES HAVE BEEN FOUND"
        ("shapes/bin-only", ("PyTorch .bin weights (pytorch_model.bin)", "100 bytes on the hub")),
        ("shapes/bin-sharded", ("pytorch_model-00001-of-00002.bin", "metadata.total_size 1,234 bytes")),
    ],
)
def test_a_repo_without_safetensors_says_what_weights_it_has(
    cli, shapes_server, monkeypatch, tmp_path, repo_id, needles
):
    r = _shapes_cli(cli, shapes_server, monkeypatch, tmp_path, "estimate", repo_id, "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert data["model"]["stored_bytes"] is None and data["model"]["stored_bytes_by_dtype"] is None
    (note,) = [n for n in data["notes"] if n.startswith("stored bytes unknown")]
    assert all(needle in note for needle in needles), note
    assert shapes_server.weight_downloads() == []


@pytest.mark.parametrize(
    ("repo_id", "needles"),
    [
        ("shapes/config-in-a-subfolder", ("it has llm/config.json in a subfolder", "--include 'llm/*'", "DIR/llm")),
        ("shapes/lora-adapter", ("PEFT LORA adapter, not a model", "'meta-llama/Llama-3.1-8B'")),
        ("shapes/gguf-without-config", ("it holds GGUF files (tiny.Q4_0.gguf)", "gguf_file=")),
        ("shapes/mistral-format-only", ("params.json and consolidated.safetensors: Mistral's own format", "vLLM")),
    ],
)
def test_a_repo_without_a_config_says_what_it_holds(cli, shapes_server, monkeypatch, tmp_path, repo_id, needles):
    """hf-mem says "NONE OF `model.safetensors`, … FILES HAVE BEEN FOUND" for the first two and sums the GGUF."""
    r = _shapes_cli(cli, shapes_server, monkeypatch, tmp_path, "estimate", repo_id)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert f"{repo_id} has no config.json at revision main; " in r.err
    assert all(needle in r.err for needle in needles), r.err
    assert "Traceback" not in r.err


def test_an_index_total_size_that_disagrees_with_the_headers_is_noted(cli, shapes_server, monkeypatch, tmp_path):
    """Both readers report the headers' 16 bytes (hf-mem never reads total_size); qcli says the index differs,
    from the hub, from a warm run's record, and from a local copy."""
    for _ in range(2):
        r = _shapes_cli(cli, shapes_server, monkeypatch, tmp_path, "estimate", "shapes/total-size-disagrees", "--json")
        assert r.code == 0, r.err
        assert r.json()["model"]["stored_bytes"] == 16
        assert any("metadata.total_size 999 bytes; the shards' headers hold 16" in n for n in r.json()["notes"])
    local = tmp_path / "local"
    local.mkdir()
    for name, data in shapes_server.repos["shapes/total-size-disagrees"].files.items():
        (local / name).write_bytes(data)
    r = cli("estimate", str(local), "--json")
    assert r.code == 0, r.err
    assert any("metadata.total_size 999 bytes" in n for n in r.json()["notes"])
    (local / "model.safetensors.index.json").write_bytes(_index({"a": "s1.safetensors"}, 16))
    assert not any("total_size" in n for n in cli("estimate", str(local), "--json").json()["notes"])


def _write_local(repo: hubserver.Repo, where) -> str:
    for name, data in repo.files.items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_bytes(data)
    return str(where)


@pytest.mark.parametrize(
    ("repo_id", "needle"),
    [
        ("shapes/config-in-a-subfolder", "it has llm/config.json in a subfolder"),
        ("shapes/lora-adapter", "PEFT LORA adapter, not a model"),
        ("shapes/gguf-without-config", "it holds GGUF files (tiny.Q4_0.gguf)"),
        ("shapes/mistral-format-only", "Mistral's own format"),
    ],
)
def test_a_local_copy_without_a_config_gets_the_words_the_hub_gets(cli, shapes_server, tmp_path, repo_id, needle):
    local = _write_local(shapes_server.repos[repo_id], tmp_path / "copy")
    r = cli("estimate", local)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "no config.json in this directory; it " in r.err and needle in r.err, r.err


@pytest.mark.parametrize(
    ("repo_id", "needle"),
    [
        ("shapes/gguf-only", "the directory has GGUF weights (model-Q4_K_M.gguf)"),
        ("shapes/bin-only", "the .bin files are 100 bytes here"),
        ("shapes/bin-sharded", "metadata.total_size 1,234 bytes"),
    ],
)
def test_a_local_copy_without_safetensors_says_what_weights_it_has(cli, shapes_server, tmp_path, repo_id, needle):
    local = _write_local(shapes_server.repos[repo_id], tmp_path / "copy")
    r = cli("estimate", local, "--json")
    assert r.code == 0, r.err
    assert any(needle in n for n in r.json()["notes"]), r.json()["notes"]
