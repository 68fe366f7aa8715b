"""Issue 12: any model a user can name, exact, fast, and honest when the network is not.

Every test drives qcli's real CLI against the loopback hub in tests/hubserver.py, so huggingface_hub's real
client makes the requests and raises its own errors.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from tests import hubserver
from tests.conftest import fixture_config
from tests.hubserver import GOOD_TOKEN, UNGRANTED_TOKEN, HubServer, Repo, point_hub_at

# The loopback hub's pytest fixtures, bound here so that pytest finds them in this module.
hub, hub_repos, hub_server, closed_endpoint = (
    hubserver.hub,
    hubserver.hub_repos,
    hubserver.hub_server,
    hubserver.closed_endpoint,
)

QUICK_S = 5.0  # a failing hub must answer in seconds, not after huggingface_hub's ~25 s of retries


def data_offsets_bytes(repo: Repo) -> dict[str, int]:
    """Return bytes per dtype: the sum of (end - start) of every tensor's data_offsets, over every shard."""
    totals: dict[str, int] = {}
    for name, data in repo.files.items():
        if not name.endswith(".safetensors"):
            continue
        (n,) = struct.unpack("<Q", data[:8])
        for key, info in json.loads(data[8 : 8 + n]).items():
            if key != "__metadata__":
                start, end = info["data_offsets"]
                totals[info["dtype"]] = totals.get(info["dtype"], 0) + end - start
    return totals


def source_of(data: dict) -> dict:
    return data["model"]["source"]


def commit_of(data: dict) -> str | None:
    return source_of(data)["commit_sha"]


def config_from(data: dict) -> str:
    return source_of(data)["config_from"]


def stored_of(data: dict) -> dict[str, int]:
    return data["model"]["stored_bytes_by_dtype"]


def one_line_error(r, *needles: str, exit_code: int = 2) -> str:
    """Assert the run failed with one line on stderr containing every needle; return it."""
    assert r.code == exit_code, (r.code, r.out, r.err)
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1, r.err
    low = lines[0].lower()
    for needle in needles:
        assert needle.lower() in low, (needle, lines[0])
    assert "retrying" not in r.err.lower()
    return lines[0]


# -- names ---------------------------------------------------------------------------------------------


def test_estimate_takes_a_hub_id_positionally(cli, hub: HubServer, hub_repos):
    r = cli("estimate", "acme/tiny-llama", "--preset", "nf4", "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert commit_of(data) == hub_repos["acme/tiny-llama"].sha
    assert config_from(data) == "hub"
    assert source_of(data)["revision"] == "main"
    again = cli("estimate", "acme/tiny-llama", "--preset", "nf4", "--json")
    assert again.code == 0 and config_from(again.json()) == "cache"
    assert commit_of(again.json()) == commit_of(data)


def test_model_option_still_works(cli, hub: HubServer, hub_repos):
    r = cli("estimate", "--model", "acme/tiny-llama", "--json")
    assert r.code == 0, r.err
    assert commit_of(r.json()) == hub_repos["acme/tiny-llama"].sha


def test_model_given_twice_is_an_error(cli, hub: HubServer):
    r = cli("estimate", "acme/tiny-llama", "--model", "acme/tiny-llama-sharded")
    one_line_error(r, "model")


@pytest.mark.parametrize(
    "url",
    [
        "https://huggingface.co/acme/tiny-llama",
        "https://huggingface.co/acme/tiny-llama/",
        "https://hf.co/acme/tiny-llama/tree/main",
        "{endpoint}/acme/tiny-llama/tree/{sha}",
        "huggingface.co/acme/tiny-llama",  # copied from an address bar that hides the scheme
        "HTTPS://HF.CO/acme/tiny-llama/tree/main",
    ],
)
def test_estimate_takes_a_hub_url(cli, hub: HubServer, hub_repos, url):
    sha = hub_repos["acme/tiny-llama"].sha
    r = cli("estimate", url.format(endpoint=hub.url, sha=sha), "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert commit_of(data) == sha
    assert source_of(data)["repo_id"] == "acme/tiny-llama"
    if "/tree/" in url:
        assert source_of(data)["revision"] in {"main", sha}


def test_revision_selects_a_commit(cli, hub: HubServer, hub_repos):
    sha = hub_repos["acme/tiny-llama"].sha
    r = cli("estimate", "acme/tiny-llama", "--revision", sha, "--json")
    assert r.code == 0, r.err
    assert commit_of(r.json()) == sha and source_of(r.json())["revision"] == sha


def test_local_dir_records_where_the_config_came_from(cli, hub_repos, tmp_path):
    local = _local_copy(hub_repos["acme/tiny-llama"], tmp_path / "tiny")
    r = cli("estimate", str(local), "--json")
    assert r.code == 0, r.err
    assert config_from(r.json()) == "local" and commit_of(r.json()) is None


# -- stored bytes, exact, from the headers alone ------------------------------------------------------


def _local_copy(repo: Repo, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for name, data in repo.files.items():
        (out / name).write_bytes(data)
    return out


@pytest.mark.parametrize("repo_id", ["acme/tiny-llama", "acme/tiny-llama-sharded", "acme/tiny-llama-nf4"])
def test_stored_bytes_equal_the_data_offsets_spans(cli, hub: HubServer, hub_repos, repo_id, tmp_path):
    want = data_offsets_bytes(hub_repos[repo_id])
    r = cli("estimate", repo_id, "--json")
    assert r.code == 0, r.err
    assert stored_of(r.json()) == want
    assert hub.weight_downloads() == []  # headers only: ranged reads, never a whole weights file
    assert hub.cdn_bytes() <= 100_001 * sum(n.endswith(".safetensors") for n in hub_repos[repo_id].files)
    local = _local_copy(hub_repos[repo_id], tmp_path / "local")
    r = cli("estimate", str(local), "--json")
    assert r.code == 0, r.err
    assert stored_of(r.json()) == want


def test_an_unreadable_header_is_bad_input(cli, hub: HubServer, hub_repos, tmp_path):
    reason = "model.safetensors: not a valid safetensors file: the header is not valid JSON"
    one_line_error(cli("estimate", "acme/bad-header"), f"acme/bad-header at main: {reason}")
    local = _local_copy(hub_repos["acme/bad-header"], tmp_path / "bad")
    one_line_error(cli("estimate", str(local)), reason)


def test_stored_bytes_shown_next_to_the_projection(cli, hub: HubServer, hub_repos):
    total = sum(data_offsets_bytes(hub_repos["acme/tiny-llama"]).values())
    r = cli("estimate", "acme/tiny-llama", "--preset", "nf4")
    assert r.code == 0, r.err
    assert "stored" in r.out.lower() and f"{total:,}" in r.out


def test_stored_bytes_need_no_torch(hub: HubServer, hub_repos, tmp_path):
    import subprocess
    import sys

    local = _local_copy(hub_repos["acme/tiny-llama-sharded"], tmp_path / "local")
    code = (
        "import sys, json\n"
        "from qcli.cli import main\n"
        f"main(['estimate', {str(local)!r}, '--json'])\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert stored_of(json.loads(out.stdout)) == data_offsets_bytes(hub_repos["acme/tiny-llama-sharded"])


# -- errors that name the real cause ------------------------------------------------------------------


def test_repo_not_found(cli, hub: HubServer):
    line = one_line_error(cli("estimate", "acme/missing"), "acme/missing", "not found", "private")
    assert "config.json" not in line


def test_gated_repo_without_token(cli, hub: HubServer):
    one_line_error(cli("estimate", "acme/gated-llama"), "acme/gated-llama", "gated", "licence", "--token", "HF_TOKEN")


def test_gated_repo_with_a_token_not_granted(cli, hub: HubServer):
    r = cli("estimate", "acme/gated-llama", "--token", UNGRANTED_TOKEN)
    one_line_error(r, "gated")
    assert UNGRANTED_TOKEN not in r.out + r.err


def test_gated_repo_with_a_granted_token(cli, hub: HubServer, monkeypatch):
    r = cli("estimate", "acme/gated-llama", "--token", GOOD_TOKEN, "--json")
    assert r.code == 0, r.err
    assert GOOD_TOKEN not in r.out + r.err
    monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)
    assert cli("estimate", "acme/gated-llama", "--json").code == 0


def test_a_revoked_token_is_named_as_invalid_with_where_it_came_from(cli, hub: HubServer, monkeypatch, tmp_path):
    """The hub answers 401 "Invalid credentials" to a token it does not know, even for a public repo; it was
    "refused access (HTTP 401) (check the token's permissions)", which sends the user to the wrong page."""
    from huggingface_hub import constants

    from tests.hubserver import REVOKED_TOKEN

    r = cli("estimate", "acme/tiny-llama", "--token", REVOKED_TOKEN)
    line = one_line_error(r, "does not accept the token from --token", "invalid credentials", "revoked")
    assert REVOKED_TOKEN not in r.out + r.err and "settings/tokens" in line
    monkeypatch.setenv("HF_TOKEN", REVOKED_TOKEN)
    one_line_error(cli("estimate", "acme/tiny-llama"), "does not accept the token from HF_TOKEN")
    monkeypatch.delenv("HF_TOKEN")
    Path(constants.HF_TOKEN_PATH).parent.mkdir(parents=True, exist_ok=True)
    Path(constants.HF_TOKEN_PATH).write_text(REVOKED_TOKEN)
    r = cli("estimate", "acme/tiny-llama")
    one_line_error(r, "does not accept the token from the token saved by `hf auth login`")
    assert REVOKED_TOKEN not in r.out + r.err


def test_gated_repo_with_a_cached_config_still_says_gated(cli, hub: HubServer):
    assert cli("estimate", "acme/gated-llama", "--token", GOOD_TOKEN).code == 0  # config.json now cached
    one_line_error(cli("load", "acme/gated-llama", "--preset", "nf4"), "gated")


def test_revision_not_found(cli, hub: HubServer):
    one_line_error(cli("estimate", "acme/tiny-llama", "--revision", "nope"), "revision", "nope", "not found")


def test_file_missing_in_the_repo(cli, hub: HubServer):
    one_line_error(cli("estimate", "acme/weights-only"), "acme/weights-only", "no config.json")


def test_server_error_is_quick_and_names_the_status(cli, hub: HubServer):
    t0 = time.perf_counter()
    r = cli("estimate", "acme/broken-llama")
    assert time.perf_counter() - t0 < QUICK_S
    line = one_line_error(r, "500")
    assert "config.json" not in line


def test_plain_403_names_the_status(cli, hub: HubServer):
    line = one_line_error(cli("estimate", "acme/forbidden-llama"), "403")
    assert "config.json" not in line


def test_unreachable_hub_is_quick(cli, closed_endpoint: str):
    t0 = time.perf_counter()
    r = cli("estimate", "acme/tiny-llama")
    assert time.perf_counter() - t0 < QUICK_S
    one_line_error(r, "cannot reach", closed_endpoint)


def test_offline_and_not_cached(cli, hub: HubServer, monkeypatch, tmp_path):
    point_hub_at(monkeypatch, hub.url, tmp_path / "hf-home", offline=True)
    line = one_line_error(cli("estimate", "acme/tiny-llama"), "offline", "not in the local cache", "HF_HUB_OFFLINE")
    assert "config.json" not in line or "download" in line.lower()
    assert hub.log == []


def test_offline_and_cached_uses_the_cache(cli, hub: HubServer, hub_repos, monkeypatch, tmp_path):
    assert cli("estimate", "acme/tiny-llama").code == 0
    point_hub_at(monkeypatch, hub.url, tmp_path / "hf-home", offline=True)
    hub.clear_log()
    r = cli("estimate", "acme/tiny-llama", "--json")
    assert r.code == 0, r.err
    assert config_from(r.json()) == "cache" and commit_of(r.json()) == hub_repos["acme/tiny-llama"].sha
    assert hub.log == []


@pytest.mark.parametrize("repo", ["acme/tiny-llama", "acme/tiny-llama-sharded"])
def test_offline_a_whole_cached_snapshot_gives_its_stored_bytes(
    cli, hub: HubServer, hub_repos, repo, monkeypatch, tmp_path
):
    """Downloaded whole (`hf download`, an earlier load) but never estimated: qcli has no record of its headers,
    and reads them from the hub cache's files."""
    from huggingface_hub import snapshot_download

    snapshot_download(repo)
    monkeypatch.setenv("QCLI_CACHE", str(tmp_path / "fresh-qcli-cache"))  # no record of the headers
    point_hub_at(monkeypatch, hub.url, tmp_path / "hf-home", offline=True)
    hub.clear_log()
    r = cli("estimate", repo, "--json")
    assert r.code == 0, r.err
    assert r.json()["model"]["stored_bytes_by_dtype"] == data_offsets_bytes(hub_repos[repo])
    assert hub.log == []


def test_a_damaged_cached_config_says_it_is_the_cached_copy(cli, hub: HubServer, hub_repos, monkeypatch, tmp_path):
    """The hub cache's config.json damaged since its download: the line says it is the cache's copy, and how
    to replace it (deleting the snapshot's link is not enough: huggingface_hub links the damaged blob again)."""
    assert cli("estimate", "acme/tiny-llama").code == 0
    sha = hub_repos["acme/tiny-llama"].sha
    from qcli.model.hub import cached_file

    cached_file("acme/tiny-llama", "config.json", "main").resolve().write_text("{damaged")
    for offline in (False, True):
        point_hub_at(monkeypatch, hub.url, tmp_path / "hf-home", offline=offline)
        line = one_line_error(cli("estimate", "acme/tiny-llama"), "not valid JSON", "as read from the hub cache")
        assert f"hf download acme/tiny-llama config.json --revision {sha} --force-download" in line


def test_a_cached_commit_needs_no_request(cli, hub: HubServer, hub_repos):
    sha = hub_repos["acme/tiny-llama"].sha
    assert cli("estimate", "acme/tiny-llama").code == 0
    hub.clear_log()
    r = cli("estimate", "acme/tiny-llama", "--revision", sha, "--json")
    assert r.code == 0, r.err
    assert config_from(r.json()) == "cache" and stored_of(r.json())
    assert hub.log == []  # a commit's files never change: nothing to ask


def test_a_warm_run_asks_one_head_request(cli, hub: HubServer, hub_repos):
    assert cli("estimate", "acme/tiny-llama").code == 0
    hub.clear_log()
    r = cli("estimate", "acme/tiny-llama", "--json")
    assert r.code == 0, r.err
    assert config_from(r.json()) == "cache" and commit_of(r.json()) == hub_repos["acme/tiny-llama"].sha
    assert [(q.method, q.path, q.status) for q in hub.log] == [
        ("HEAD", "/acme/tiny-llama/resolve/main/config.json", 200)
    ]


def test_a_warm_run_imports_no_http_client(hub: HubServer, hub_repos):
    """The warm path's one request is written on a socket: neither huggingface_hub's client nor
    http.client is imported (docs/bench-hub.md says why)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from qcli.cli import main\n"
        "rc = main(['estimate', 'acme/tiny-llama'])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('httpx', 'http.client'))))\n"
        "sys.exit(rc)\n"
    )
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().splitlines()[-1] != "[]"  # cold: huggingface_hub downloaded the config
    hub.clear_log()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert [q.method for q in hub.log] == ["HEAD"]


def test_a_moved_branch_is_followed(cli, hub: HubServer, hub_repos, monkeypatch):
    """Warm, the branch is still asked for: when it moved, the new commit's files are downloaded."""
    assert cli("estimate", "acme/tiny-llama").code == 0
    moved = "f" * 40
    monkeypatch.setitem(hub_repos["acme/tiny-llama"].branches, "main", moved)
    r = cli("estimate", "acme/tiny-llama", "--json")
    assert r.code == 0, r.err
    assert commit_of(r.json()) == moved and config_from(r.json()) == "hub"


def test_a_warm_gated_repo_needs_the_token_again(cli, hub: HubServer, monkeypatch):
    """The warm path sends HF_TOKEN as huggingface_hub would; without a token the hub's refusal is named."""
    monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)
    assert cli("estimate", "acme/gated-llama").code == 0
    hub.clear_log()
    r = cli("estimate", "acme/gated-llama", "--json")
    assert r.code == 0, r.err
    assert config_from(r.json()) == "cache" and [q.authorization for q in hub.log] == [True]
    monkeypatch.delenv("HF_TOKEN")
    one_line_error(cli("estimate", "acme/gated-llama"), "gated")


def test_a_proxy_is_not_bypassed(cli, hub: HubServer, hub_repos, monkeypatch):
    """With a proxy set, the warm path leaves the request to huggingface_hub, which goes through it."""
    from tests.hubserver import free_port

    assert cli("estimate", "acme/tiny-llama").code == 0
    hub.clear_log()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # a proxy that is down
    monkeypatch.setenv("NO_PROXY", "")
    from huggingface_hub.utils import close_session

    close_session()  # huggingface_hub's client reads the proxy from the environment when it is created
    r = cli("estimate", "acme/tiny-llama", "--json")
    close_session()  # the next test's client goes direct again
    assert r.code == 0, r.err
    assert config_from(r.json()) == "cache" and commit_of(r.json()) == hub_repos["acme/tiny-llama"].sha
    assert hub.log == []  # nothing went to the hub around the proxy


def test_a_silent_hub_is_waited_for_once(cli, hub: HubServer, monkeypatch, tmp_path, hub_repos):
    """An endpoint that accepts connections and never answers: one HF_HUB_ETAG_TIMEOUT, then the cache."""
    import socket

    assert cli("estimate", "acme/tiny-llama").code == 0
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        point_hub_at(monkeypatch, f"http://127.0.0.1:{silent.getsockname()[1]}", tmp_path / "hf-home")
        t0 = time.perf_counter()
        r = cli("estimate", "acme/tiny-llama", "--json")
        took = time.perf_counter() - t0
    assert r.code == 0, r.err
    assert config_from(r.json()) == "cache" and commit_of(r.json()) == hub_repos["acme/tiny-llama"].sha
    assert 2 <= took < 2 * 2, took  # point_hub_at sets HF_HUB_ETAG_TIMEOUT=2: waited once, not twice


SHA = "e" * 40


@pytest.mark.parametrize(
    ("answer", "commit"),
    [
        ([b"HTTP/1.1 200 OK\r\nX-Repo-Commit: " + SHA.encode() + b"\r\nContent-Length: 0\r\n\r\n"], SHA),
        ([b"HTTP/1.1 200 OK\r\n", b"x-repo-commit:  ", SHA.encode(), b"  \r\n", b"\r\n"], SHA),  # in pieces
        ([b"SSH-2.0-OpenSSH_9.6\r\n\r\n"], None),  # not HTTP
        ([b"HTTP/1.1 200 OK\r\nX-Repo-Commit: not-a-sha\r\n\r\n"], None),
        ([b"HTTP/1.1 200 OK\r\nX-Repo-Commit: " + SHA.encode()], None),  # the head never ends
        ([b"HTTP/1.1 302 Found\r\nX-Repo-Commit: " + SHA.encode() + b"\r\n\r\n"], None),  # not followed
        ([b"HTTP/1.1 401 Unauthorized\r\nX-Repo-Commit: " + SHA.encode() + b"\r\n\r\n"], None),
        ([b"HTTP/1.1 200 OK\r\nX-Repo-Commit: " + b"a" * 70000 + b"\r\n\r\n"], None),  # endless header
    ],
)
def test_the_warm_probe_believes_only_a_plain_200_with_a_commit(monkeypatch, tmp_path, answer, commit):
    """The warm path's one hand-written HEAD request: any answer but a 200 with a full sha is None, and
    huggingface_hub then asks again and names what went wrong."""
    import socket
    import threading

    from qcli.model import hub as qcli_hub

    with socket.socket() as odd:
        odd.bind(("127.0.0.1", 0))
        odd.listen(1)
        port = odd.getsockname()[1]
        seen: list[bytes] = []

        def serve() -> None:
            conn, _ = odd.accept()
            with conn:
                seen.append(conn.recv(65536))
                for piece in answer:
                    conn.sendall(piece)
                    time.sleep(0.01)

        threading.Thread(target=serve, daemon=True).start()
        point_hub_at(monkeypatch, f"http://127.0.0.1:{port}", tmp_path / "hf-home")
        (tmp_path / "hf-home" / "hub" / "models--acme--tiny-llama").mkdir(parents=True)  # "cached"
        monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)
        assert qcli_hub._probe_commit("acme/tiny-llama", "config.json", "main", None) == commit
    request = seen[0].decode("latin-1")
    assert request.startswith("HEAD /acme/tiny-llama/resolve/main/config.json HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{port}\r\n" in request
    assert f"Authorization: Bearer {GOOD_TOKEN}\r\n" in request and request.endswith("\r\n\r\n")


def test_unreachable_with_a_cached_config_uses_the_cache(cli, hub: HubServer, monkeypatch, tmp_path, hub_repos):
    assert cli("estimate", "acme/tiny-llama").code == 0
    from tests.hubserver import free_port

    point_hub_at(monkeypatch, f"http://127.0.0.1:{free_port()}", tmp_path / "hf-home")
    t0 = time.perf_counter()
    r = cli("estimate", "acme/tiny-llama", "--json")
    assert time.perf_counter() - t0 < QUICK_S
    assert r.code == 0, r.err
    assert config_from(r.json()) == "cache" and commit_of(r.json()) == hub_repos["acme/tiny-llama"].sha


def test_hub_errors_reach_load_verify_and_compare(cli, hub: HubServer):
    one_line_error(cli("load", "acme/missing", "--preset", "nf4"), "not found")
    one_line_error(cli("load", "acme/tiny-llama", "--revision", "nope", "--preset", "nf4"), "revision")
    one_line_error(cli("verify", "acme/gated-llama", "--preset", "nf4"), "gated")
    r = cli("compare", "acme/gated-llama", "--presets", "bf16,nf4", "--token", UNGRANTED_TOKEN)
    one_line_error(r, "gated")
    assert UNGRANTED_TOKEN not in r.out + r.err
    one_line_error(cli("compare", "acme/tiny-llama", "--revision", "nope"), "revision")


def test_url_and_revision_must_agree(cli, hub: HubServer):
    r = cli("estimate", "https://huggingface.co/acme/tiny-llama/tree/main", "--revision", "v2")
    one_line_error(r, "main", "v2")


def test_a_local_directory_named_like_a_hub_url_is_read_locally(cli, hub: HubServer, tmp_path, monkeypatch):
    local = tmp_path / "huggingface.co" / "acme" / "tiny-llama"
    local.mkdir(parents=True)
    (local / "config.json").write_text(json.dumps(fixture_config("llama3-8b")))
    monkeypatch.chdir(tmp_path)
    r = cli("estimate", "huggingface.co/acme/tiny-llama", "--json")
    assert r.code == 0, r.err
    assert source_of(r.json())["config_from"] == "local"


def test_url_of_another_site_is_refused(cli, hub: HubServer):
    one_line_error(cli("estimate", "https://example.com/acme/tiny-llama"), "not a model URL")
    one_line_error(cli("estimate", "https://huggingface.co/datasets/acme/data"), "not a model")


# -- pre-quantized checkpoints -------------------------------------------------------------------------


def test_prequantized_checkpoint_is_sized_as_stored(cli, hub: HubServer, hub_repos):
    r = cli("estimate", "acme/tiny-llama-nf4", "--json")
    assert r.code == 0, r.err
    data = r.json()
    q = data["model"]["prequantized"]
    assert q["quant_method"] == "bitsandbytes" and q["format"] == "nf4" and q["loadable"] is True
    stored = data_offsets_bytes(hub_repos["acme/tiny-llama-nf4"])
    assert sum(stored_of(data).values()) == sum(stored.values())
    assert any("pre-quantized" in n for n in data["notes"])


def test_prequantized_refuses_another_quantization(cli, hub: HubServer):
    one_line_error(cli("estimate", "acme/tiny-llama-nf4", "--preset", "int8"), "nf4", "int8")
    assert cli("estimate", "acme/tiny-llama-nf4", "--preset", "nf4").code == 0


def test_unsupported_quantization_still_reports_stored_bytes(cli, hub_repos, tmp_path):
    local = _local_copy(hub_repos["acme/tiny-llama"], tmp_path / "gptq")
    cfg = json.loads((local / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 128}
    (local / "config.json").write_text(json.dumps(cfg))
    r = cli("estimate", str(local), "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert data["model"]["prequantized"]["quant_method"] == "gptq" and not data["model"]["prequantized"]["loadable"]
    assert stored_of(data) == data_offsets_bytes(hub_repos["acme/tiny-llama"])
    assert any("not supported" in n for n in data["notes"])


@pytest.mark.slow
def test_prequantized_load_matches_the_estimate(cli, hub: HubServer):
    r = cli("load", "acme/tiny-llama-nf4", "--preset", "nf4", "--device", "cpu", "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert data["memory_bytes"] == data["estimate_bytes"]


@pytest.mark.slow
def test_load_from_the_hub_matches_the_estimate(cli, hub: HubServer, hub_repos):
    r = cli("load", "acme/tiny-llama-sharded", "--preset", "nf4", "--device", "cpu", "--json")
    assert r.code == 0, r.err
    assert r.json()["memory_bytes"] == r.json()["estimate_bytes"]


def test_cache_reads_agree_with_huggingface_hub(cli, hub: HubServer, hub_repos):
    """qcli reads the hub cache's layout itself on the fast path: it must find what huggingface_hub finds."""
    from huggingface_hub import try_to_load_from_cache

    from qcli.model.hub import cached_file

    assert cli("estimate", "acme/tiny-llama").code == 0
    sha = hub_repos["acme/tiny-llama"].sha
    for rev in ("main", sha, "no-such-branch"):
        theirs = try_to_load_from_cache("acme/tiny-llama", "config.json", revision=rev)
        ours = cached_file("acme/tiny-llama", "config.json", rev)
        assert (str(ours) if ours else None) == (theirs if isinstance(theirs, str) else None)
    assert cached_file("acme/tiny-llama", "config.json", "main") is not None


def test_a_branch_that_moves_between_requests_is_read_at_one_commit(cli, hub_repos, monkeypatch, tmp_path):
    """main moves to another commit right after config.json is sent (a push between two requests): the
    safetensors are read at the commit config.json came from, not at whatever main is by then. (hf-mem asks
    for every file at `main`: moved after its tree listing, it asks for a model.safetensors that is gone.)"""
    config = hub_repos["acme/tiny-llama"].files["config.json"]
    f32 = {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    bf16 = {"w": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}}

    def st(header: dict, data: int) -> bytes:
        raw = json.dumps(header).encode()
        return struct.pack("<Q", len(raw)) + raw + bytes(data)

    later = "b" * 40
    moved = {"config.json": config, "model.safetensors.index.json": b'{"weight_map": {"w": "s1.safetensors"}}'}
    repo = Repo(
        {"config.json": config, "model.safetensors": st(f32, 16)},
        history={later: {**moved, "s1.safetensors": st(bf16, 8)}},
        move_after=("config.json", later),
    )
    with HubServer({"acme/pushed": repo}) as server:
        point_hub_at(monkeypatch, server.url, tmp_path / "hf-home")
        monkeypatch.setenv("QCLI_CACHE", str(tmp_path / "qcli-cache"))
        r = cli("estimate", "acme/pushed", "--json")
        assert r.code == 0, r.err
        assert repo.branches["main"] == later  # it did move
        assert commit_of(r.json()) == repo.sha and stored_of(r.json()) == {"F32": 16}
        r = cli("estimate", "acme/pushed", "--json")  # the next run reads the new commit, whole
        assert r.code == 0, r.err
        assert commit_of(r.json()) == later and stored_of(r.json()) == {"BF16": 8}
