"""The loopback hub speaks what huggingface_hub's real client needs, and fails the way the real hub does."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
from huggingface_hub import HfApi, errors, hf_hub_download

from tests import hubserver
from tests.hubserver import GOOD_TOKEN, UNGRANTED_TOKEN, HubServer, point_hub_at

# The loopback hub's pytest fixtures, bound here so that pytest finds them in this module.
hub, hub_repos, hub_server, closed_endpoint = (
    hubserver.hub,
    hubserver.hub_repos,
    hubserver.hub_server,
    hubserver.closed_endpoint,
)


def header_spans(data: bytes) -> dict[str, tuple[str, int]]:
    """Return tensor name -> (dtype, end - start) straight from a safetensors header."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    return {
        k: (v["dtype"], v["data_offsets"][1] - v["data_offsets"][0]) for k, v in header.items() if k != "__metadata__"
    }


def test_download_config_and_weights(hub: HubServer, hub_repos):
    repo = hub_repos["acme/tiny-llama"]
    path = Path(hf_hub_download("acme/tiny-llama", "config.json"))
    assert path.read_bytes() == repo.files["config.json"]
    assert path.parent.name == repo.sha  # the snapshot is named by X-Repo-Commit
    weights = Path(hf_hub_download("acme/tiny-llama", "model.safetensors"))
    assert weights.read_bytes() == repo.files["model.safetensors"]
    assert len(hub.weight_downloads()) == 1  # through the CDN redirect
    redirect = [r for r in hub.log if r.host == "hub" and r.path.endswith("model.safetensors")]
    assert {r.status for r in redirect} == {302}


def test_download_by_commit_sha_and_branch(hub: HubServer, hub_repos):
    sha = hub_repos["acme/tiny-llama"].sha
    assert Path(hf_hub_download("acme/tiny-llama", "config.json", revision=sha)).parent.name == sha


def test_safetensors_metadata_reads_headers_only(hub: HubServer, hub_repos):
    for repo_id in ("acme/tiny-llama", "acme/tiny-llama-sharded", "acme/tiny-llama-nf4"):
        repo = hub_repos[repo_id]
        meta = HfApi().get_safetensors_metadata(repo_id)
        got = {
            name: (t.dtype, t.data_offsets[1] - t.data_offsets[0])
            for fm in meta.files_metadata.values()
            for name, t in fm.tensors.items()
        }
        want = {}
        for fname, data in repo.files.items():
            if fname.endswith(".safetensors"):
                want |= header_spans(data)
        assert got == want
        assert meta.sharded == (repo_id == "acme/tiny-llama-sharded")
    assert hub.weight_downloads() == []
    ranged = [r for r in hub.log if r.host == "cdn"]
    assert ranged and all(r.status == 206 for r in ranged)


def test_model_info(hub: HubServer, hub_repos):
    info = HfApi().model_info("acme/tiny-llama-sharded")
    assert info.sha == hub_repos["acme/tiny-llama-sharded"].sha
    assert {s.rfilename for s in info.siblings} >= {"config.json", "model.safetensors.index.json"}
    assert HfApi().model_info("acme/tiny-llama", revision="main").sha == hub_repos["acme/tiny-llama"].sha


def test_list_repo_tree(hub: HubServer, hub_repos):
    repo = hub_repos["acme/tiny-llama-sharded"]
    files = {f.path: f for f in HfApi().list_repo_tree("acme/tiny-llama-sharded", revision=repo.sha)}
    assert set(files) == set(repo.files)
    shard = "model-00001-of-00002.safetensors"
    assert files[shard].lfs is not None and files[shard].lfs.size == len(repo.files[shard])
    assert files["config.json"].lfs is None


@pytest.mark.parametrize(
    ("repo_id", "revision", "filename", "error", "status"),
    [
        ("acme/missing", None, "config.json", errors.RepositoryNotFoundError, 401),
        ("acme/gated-llama", None, "config.json", errors.GatedRepoError, 401),
        ("acme/tiny-llama", "no-such-branch", "config.json", errors.RevisionNotFoundError, 404),
        ("acme/weights-only", None, "config.json", errors.RemoteEntryNotFoundError, 404),
    ],
)
def test_typed_errors(hub: HubServer, repo_id, revision, filename, error, status):
    with pytest.raises(error) as exc:
        hf_hub_download(repo_id, filename, revision=revision)
    assert exc.value.response.status_code == status
    if error is not errors.RemoteEntryNotFoundError:  # the repo itself exists
        with pytest.raises(error):
            HfApi().model_info(repo_id, revision=revision)


def test_gated_with_tokens(hub: HubServer):
    with pytest.raises(errors.GatedRepoError) as exc:
        hf_hub_download("acme/gated-llama", "config.json", token=UNGRANTED_TOKEN)
    assert exc.value.response.status_code == 403
    assert Path(hf_hub_download("acme/gated-llama", "config.json", token=GOOD_TOKEN)).is_file()
    with pytest.raises(errors.RepositoryNotFoundError) as exc:
        hf_hub_download("acme/missing", "config.json", token=GOOD_TOKEN)
    assert exc.value.response.status_code == 404


def test_plain_403_and_500(hub: HubServer):
    with pytest.raises(errors.HfHubHTTPError) as exc:
        HfApi().model_info("acme/forbidden-llama")
    assert exc.value.response.status_code == 403 and not isinstance(exc.value, errors.GatedRepoError)
    with pytest.raises(errors.HfHubHTTPError) as exc:
        HfApi().model_info("acme/broken-llama")
    assert exc.value.response.status_code == 500


def test_a_revoked_token_is_refused_everywhere(hub: HubServer):
    from tests.hubserver import REVOKED_TOKEN

    for repo_id in ("acme/tiny-llama", "acme/missing"):
        with pytest.raises(errors.HfHubHTTPError) as exc:
            hf_hub_download(repo_id, "config.json", token=REVOKED_TOKEN)
        assert exc.value.response.status_code == 401 and not isinstance(exc.value, errors.RepositoryNotFoundError)


def test_a_short_sha_names_its_commit(hub: HubServer, hub_repos):
    sha = hub_repos["acme/tiny-llama"].sha
    assert HfApi().model_info("acme/tiny-llama", revision=sha[:7]).sha == sha
    with pytest.raises(errors.RevisionNotFoundError):
        HfApi().model_info("acme/tiny-llama", revision=sha[:6])  # too short to be one


def test_html_and_away_faults_answer_without_the_hub_headers(hub_repos):
    from huggingface_hub.file_download import get_hf_file_metadata

    from tests.hubserver import HTML_PAGE, Repo

    files = hub_repos["acme/tiny-llama"].files
    repos = {"x/html": Repo(dict(files), faults={"config.json": "html"})}
    repos["x/away"] = Repo(dict(files), faults={"config.json": "away"})
    with HubServer(repos) as server:
        html = get_hf_file_metadata(f"{server.url}/x/html/resolve/main/config.json")
        assert html.commit_hash is None
        away = get_hf_file_metadata(f"{server.url}/x/away/resolve/main/config.json")
        assert away.commit_hash is None and away.location == f"{server.cdn_url}/login"
        import httpx2

        assert httpx2.get(away.location).content == HTML_PAGE


def test_closed_endpoint_refuses_quickly(closed_endpoint: str):
    import httpx2  # huggingface_hub 2.x's HTTP client

    t0 = time.perf_counter()
    with pytest.raises(httpx2.ConnectError):
        HfApi().model_info("acme/tiny-llama")
    assert time.perf_counter() - t0 < 2


def test_offline_reads_the_cache_only(hub: HubServer, monkeypatch, tmp_path):
    hf_hub_download("acme/tiny-llama", "config.json")
    point_hub_at(monkeypatch, hub.url, tmp_path / "hf-home", offline=True)
    hub.clear_log()
    assert Path(hf_hub_download("acme/tiny-llama", "config.json")).is_file()
    with pytest.raises(errors.LocalEntryNotFoundError):
        hf_hub_download("acme/tiny-llama-sharded", "config.json")
    assert hub.log == []


def test_history_serves_each_commit_its_files_and_main_moves_after_a_file(monkeypatch, tmp_path):
    later = "c" * 40
    repo = hubserver.Repo(
        {"config.json": b'{"v": 1}', "a.txt": b"a"},
        history={later: {"config.json": b'{"v": 2}'}},
        move_after=("a.txt", later),
    )
    with HubServer({"acme/h": repo}) as server:
        point_hub_at(monkeypatch, server.url, tmp_path / "hf-home")
        api = HfApi()
        assert api.model_info("acme/h").sha == repo.sha
        assert Path(hf_hub_download("acme/h", "config.json", revision=later)).read_bytes() == b'{"v": 2}'
        with pytest.raises(errors.RemoteEntryNotFoundError):
            hf_hub_download("acme/h", "a.txt", revision=later)
        assert sorted(api.list_repo_files("acme/h", revision=later)) == ["config.json"]
        hf_hub_download("acme/h", "a.txt")  # main moves once this is sent
        assert api.model_info("acme/h").sha == later
        assert Path(hf_hub_download("acme/h", "config.json")).read_bytes() == b'{"v": 2}'
        assert Path(hf_hub_download("acme/h", "config.json", revision=repo.sha)).read_bytes() == b'{"v": 1}'
