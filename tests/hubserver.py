"""A Hugging Face hub on loopback, for tests that drive huggingface_hub's real client.

`HubServer` answers the few routes huggingface_hub 2.x uses to read a model repo, with the headers and
error codes the real hub sends (huggingface_hub/utils/_http.py `hf_raise_for_status` turns them into its
typed errors; file_download.py `get_hf_file_metadata` reads `X-Repo-Commit`, `ETag`, `X-Linked-Etag`,
`X-Linked-Size`):

- HEAD/GET `/{repo}/resolve/{rev}/{file}`: small files are answered directly (ETag = git blob sha1);
  `.safetensors` files answer 302 to a second server on another port (the "CDN": a different origin, so
  huggingface_hub reads the metadata from the redirect itself, as it does with the real hub's LFS files).
- GET on the CDN honours `Range` with 206, which `get_safetensors_metadata` relies on.
- GET `/api/models/{repo}` and `/api/models/{repo}/revision/{rev}`: `id`, `sha`, `siblings`, `gated`;
  `/api/models/{repo}/tree/{rev}`: the file list `HfApi.list_repo_tree` reads; `/api/agent-harnesses`
  (an empty registry: huggingface_hub fetches it for its user agent and caches it for a day).
- Errors: an unknown repo is 401 (no token) or 404 (token) with `X-Error-Code: RepoNotFound`; a gated repo
  401 (no token) or 403 (a token not granted) with `GatedRepo`; `RevisionNotFound`; `EntryNotFound` (with
  `X-Repo-Commit`); a plain 403 with no error code; and a repo whose every answer is HTTP 500.
- Faults of one file of a repo (`Repo.faults`), for a transfer that breaks after a good HEAD: `stall`
  (the GET answers after 30 s), `429` (every GET is rate limited, `Retry-After: 1`), `short` (the GET's
  Content-Length promises more bytes than it sends, then the connection closes), `loop` (HEAD and GET
  answer 301 to themselves), `404` (a plain 404 with no error code), `500` (GETs answer HTTP 500), `html`
  (HEAD and GET answer 200 with an HTML page and no hub headers, as a captive portal or a proxy's error page
  does), `away` (HEAD and GET answer 302 to an HTML page on another host, the CDN's port).
  Also `CODED_ERRORS` (an HTTP error with the hub's X-Error-Code, or none), `HEADER_FAULTS` (a good answer
  with a weak ETag, no ETag, or an X-Repo-Commit that is no sha), `relative` (a 302 to a relative Location
  that serves the same file) and `slow-head` (the HEAD answers after 30 s).
- A repo's other commits (`Repo.history`, each with its own files) are served at their sha; `move_after`
  moves main to one of them once a given file (or the tree listing) has been sent: a push between requests.
- A revoked token (`REVOKED_TOKEN`) gets 401 "Invalid credentials in Authorization header" on every route;
  a short sha (7 or more hex digits) names its commit, as on the real hub.

Every request is logged (`HubServer.log`), so a test can assert, e.g., that no weights were downloaded.
The pytest fixtures at the bottom (`hub_repos`, `hub`, `closed_endpoint`) point huggingface_hub at it.
A test module binds them to module names, which pytest collects:
`hub, hub_repos, hub_server, closed_endpoint = hubserver.hub, hubserver.hub_repos, ...`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

GOOD_TOKEN = "hf_qcliTestTokenGranted0123456789"  # granted access to every gated repo
UNGRANTED_TOKEN = "hf_qcliTestTokenNotGranted98765"  # a valid user who has not accepted the licence
REVOKED_TOKEN = "hf_qcliTestTokenRevoked000000000"  # well-formed, but no longer a token: every request is 401
# What a captive portal or a proxy's error page sends where a file should be.
HTML_PAGE = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Sign in to continue</body></html>"

# Faults that answer a file with an HTTP error and the hub's X-Error-Code (None: no code): fault -> (status, code)
CODED_ERRORS = {
    "401": (401, None),
    "gated-403": (403, "GatedRepo"),
    "revision-404": (404, "RevisionNotFound"),
    "entry-404": (404, "EntryNotFound"),
    "repo-404": (404, "RepoNotFound"),
    "429-all": (429, None),
}

HEADER_FAULTS = ("weak-etag", "no-etag", "bad-commit")  # a good answer with one header odd or missing

# Files that the real hub stores with LFS (and so serves through the CDN redirect).
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


@dataclass
class Repo:
    """One model repo: its files at one commit, and how the hub treats requests for it."""

    files: dict[str, bytes]
    access: str = "public"  # public | gated | forbidden | error500
    sha: str = ""
    branches: dict[str, str] = field(default_factory=dict)
    # file name -> stall | 429 | short | loop | 404 | 500 | html | away
    faults: dict[str, str] = field(default_factory=dict)
    # other commits of the repo: sha -> its files (`files` are the files of `sha`); a revision at one of them
    # is answered with its files, as the real hub answers any commit of a repo's history
    history: dict[str, dict[str, bytes]] = field(default_factory=dict)
    # (file, commit): once a GET of that file (`@tree`: the tree listing) is answered, main moves to that
    # commit, as when someone pushes between two of a client's requests
    move_after: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        digest = hashlib.sha1()
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + self.files[name])
        self.sha = self.sha or digest.hexdigest()
        self.branches = self.branches or {"main": self.sha}

    def commit(self, rev: str) -> str | None:
        """Return the commit a revision names (a branch or tag, the full sha, or a prefix of 7 or more hex
        digits of a commit, as the real hub resolves a short sha), None if none."""
        if rev in self.branches:
            return self.branches[rev]
        if rev == self.sha or rev in self.branches.values() or rev in self.history:  # files at a full sha
            return rev
        if re.fullmatch(r"[0-9a-f]{7,39}", rev):
            matches = {c for c in {self.sha, *self.branches.values(), *self.history} if c.startswith(rev)}
            return matches.pop() if len(matches) == 1 else None
        return None

    def files_at(self, commit: str) -> dict[str, bytes]:
        """Return the files of a commit `commit()` resolved."""
        return self.history.get(commit, self.files) if commit != self.sha else self.files

    def answered(self, filename: str) -> None:
        """A GET of `filename` was answered: move main when `move_after` says so (once)."""
        if self.move_after is not None and self.move_after[0] == filename:
            self.branches["main"] = self.move_after[1]
            self.move_after = None


@dataclass
class Request:
    method: str
    host: str  # "hub" or "cdn"
    path: str
    range: str | None
    status: int
    body_bytes: int
    authorization: bool


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Return the inclusive (start, end) of a `bytes=a-b` Range, clamped to the file; None if absent."""
    if not header:
        return None
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not m:
        return None
    if m.group(1) == "":  # suffix range: the last N bytes
        n = int(m.group(2))
        return max(0, size - n), size - 1
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    return start, min(end, size - 1)


class HubServer:
    """The hub (one port) and its CDN (another port), both threaded, on 127.0.0.1."""

    def __init__(self, repos: dict[str, Repo]) -> None:
        self.repos = repos
        self.blobs: dict[str, bytes] = {}  # sha256 -> content, served by the CDN
        for repo in repos.values():
            for files in (repo.files, *repo.history.values()):
                for name, data in files.items():
                    if name.endswith(LFS_SUFFIXES):
                        self.blobs[hashlib.sha256(data).hexdigest()] = data
        self.log: list[Request] = []
        self._lock = threading.Lock()
        self._hub = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, "hub"))
        self._cdn = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, "cdn"))
        self._hub.daemon_threads = self._cdn.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._hub.server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self._cdn.server_address[1]}"
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (self._hub, self._cdn)]

    def __enter__(self) -> HubServer:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for s in (self._hub, self._cdn):
            s.shutdown()
            s.server_close()

    def record(self, req: Request) -> None:
        with self._lock:
            self.log.append(req)

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()

    def weight_downloads(self) -> list[Request]:
        """Return the CDN GETs that asked for a whole file (no Range): downloads of weights."""
        return [r for r in self.log if r.host == "cdn" and r.method == "GET" and r.range is None]

    def cdn_bytes(self) -> int:
        """Return the bytes the CDN sent, all requests together."""
        return sum(r.body_bytes for r in self.log if r.host == "cdn")


def _handler(server: HubServer, host: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every answer carries Content-Length
        # TCP_NODELAY, as the hub's own servers send: the headers and the body go out in two writes, and
        # with Nagle's algorithm on, the body waited for the client's delayed ACK of the headers, ~40 ms
        # on every answer with a body over a kept-alive connection (docs/bench-hub.md).
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:  # silence stderr
            pass

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        # -- answers ---------------------------------------------------------------------------------
        def _send(self, status: int, headers: dict[str, str], body: bytes, head: bool) -> None:
            # Logged before answering: a client that has its answer finds its request in the log.
            server.record(
                Request(
                    self.command,
                    host,
                    self.path,
                    self.headers.get("Range"),
                    status,
                    0 if head else len(body),
                    "Authorization" in self.headers,
                )
            )
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _error(self, status: int, code: str | None, message: str, head: bool, **extra: str) -> None:
            headers = {"Content-Type": "application/json", **extra}
            if code:
                headers["X-Error-Code"] = code
            headers["X-Error-Message"] = message
            self._send(status, headers, json.dumps({"error": message}).encode(), head)

        def _token(self) -> str | None:
            auth = self.headers.get("Authorization", "")
            return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None

        def _access(self, repo_id: str, head: bool) -> Repo | None:
            """Return the repo if this request may read it; otherwise answer the error and return None."""
            repo = server.repos.get(repo_id)
            token = self._token()
            if token == REVOKED_TOKEN:  # the hub checks the credentials before it looks for the repo
                self._error(401, None, "Invalid credentials in Authorization header", head)
                return None
            if repo is None:
                # The hub hides private repos: unauthenticated requests get 401, authenticated ones 404.
                self._error(401 if token is None else 404, "RepoNotFound", "Repository not found", head)
                return None
            if repo.access == "error500":
                self._send(500, {"Content-Type": "text/plain"}, b"Internal Error", head)
                return None
            if repo.access == "forbidden":
                self._send(403, {"Content-Type": "text/plain"}, b"Forbidden", head)
                return None
            if repo.access == "gated" and token != GOOD_TOKEN:
                if token is None:
                    msg = (
                        f"Access to model {repo_id} is restricted. You must have access to it and be authenticated "
                        "to access it. Please log in."
                    )
                    self._error(401, "GatedRepo", msg, head)
                else:
                    msg = f"Access to model {repo_id} is restricted and you are not in the authorized list."
                    self._error(403, "GatedRepo", msg, head)
                return None
            return repo

        def _serve(self, head: bool) -> None:
            path = urlsplit(self.path).path
            if path.startswith("/_moved/"):  # where the `relative` fault's redirect points: the same file
                path = path[len("/_moved") :]
            if host == "cdn":
                self._cdn(path, head)
                return
            if path == "/api/agent-harnesses":  # huggingface_hub's user-agent registry, cached 24 h in HF_HOME
                registry = {"standardEnvVars": [], "harnesses": {}}
                self._send(200, {"Content-Type": "application/json"}, json.dumps(registry).encode(), head)
                return
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)/?", path)
            if m:
                self._tree(unquote(m.group(1)), unquote(m.group(2)), head)
                return
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
            if m:
                self._api(unquote(m.group(1)), unquote(m.group(2) or "main"), head)
                return
            m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if m:
                self._resolve(unquote(m.group(1)), unquote(m.group(2)), unquote(m.group(3)), head)
                return
            self._send(404, {"Content-Type": "text/plain"}, b"Not Found", head)

        def _api(self, repo_id: str, rev: str, head: bool) -> None:
            repo = self._access(repo_id, head)
            if repo is None:
                return
            commit = repo.commit(rev)
            if commit is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
                return
            info = {
                "id": repo_id,
                "modelId": repo_id,
                "sha": commit,
                "private": False,
                "gated": "auto" if repo.access == "gated" else False,
                "disabled": False,
                "library_name": "transformers",
                "siblings": [{"rfilename": name} for name in sorted(repo.files_at(commit))],
            }
            self._send(200, {"Content-Type": "application/json"}, json.dumps(info).encode(), head)

        def _tree(self, repo_id: str, rev: str, head: bool) -> None:
            """The repo's files, as `HfApi.list_repo_tree` reads them (transformers lists shards with it)."""
            repo = self._access(repo_id, head)
            if repo is None:
                return
            commit = repo.commit(rev)
            if commit is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
                return
            entries = []
            files = repo.files_at(commit)
            for name in sorted(files):
                data = files[name]
                entry = {"type": "file", "path": name, "size": len(data), "oid": git_blob_sha1(data)}
                if name.endswith(LFS_SUFFIXES):
                    entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                entries.append(entry)
            self._send(200, {"Content-Type": "application/json"}, json.dumps(entries).encode(), head)
            if not head:
                repo.answered("@tree")

        def _resolve(self, repo_id: str, rev: str, filename: str, head: bool) -> None:
            repo = self._access(repo_id, head)
            if repo is None:
                return
            commit = repo.commit(rev)
            if commit is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
                return
            data = repo.files_at(commit).get(filename)
            if data is None:
                self._error(404, "EntryNotFound", "Entry not found", head, **{"X-Repo-Commit": commit})
                return
            fault = repo.faults.get(filename)
            if self._fault(fault, data, head):
                return
            headers = {"X-Repo-Commit": commit, "ETag": f'"{git_blob_sha1(data)}"'}
            if fault == "weak-etag":
                headers["ETag"] = f'W/"{git_blob_sha1(data)}"'
            elif fault == "no-etag":
                del headers["ETag"]
            elif fault == "bad-commit":
                headers["X-Repo-Commit"] = "not-a-sha"
            if filename.endswith(LFS_SUFFIXES):
                sha256 = hashlib.sha256(data).hexdigest()
                headers |= {
                    "X-Linked-Etag": f'"{sha256}"',
                    "X-Linked-Size": str(len(data)),
                    "Location": f"{server.cdn_url}/blobs/{sha256}",
                }
                self._send(302, headers, b"", head)
                return
            self._body(data, headers, head)
            if not head:
                repo.answered(filename)

        def _fault(self, fault: str | None, data: bytes, head: bool) -> bool:
            """Answer a file's fault (see the module's docstring); False when it has none for this request."""
            if fault in HEADER_FAULTS or (fault == "relative" and self.path.startswith("/_moved/")):
                return False  # answered by _resolve, with its headers changed
            if fault == "slow-head":
                if head:
                    time.sleep(30)
                return False
            if fault in CODED_ERRORS:
                status, code = CODED_ERRORS[fault]
                self._error(
                    status, code, f"{code or 'plain'} {status}", head, **({"Retry-After": "1"} if status == 429 else {})
                )
            elif fault == "relative" and not self.path.startswith("/_moved/"):
                self._send(302, {"Location": "/_moved" + self.path}, b"", head)
            elif fault == "loop":
                self._send(301, {"Location": self.path}, b"", head)
            elif fault == "404":
                self._send(404, {"Content-Type": "text/plain"}, b"Not Found", head)
            elif fault == "html":
                self._send(200, {"Content-Type": "text/html; charset=utf-8"}, HTML_PAGE, head)
            elif fault == "away":
                self._send(302, {"Location": f"{server.cdn_url}/login"}, b"", head)
            elif head or fault is None:
                return False
            elif fault == "stall":
                time.sleep(30)
                with contextlib.suppress(OSError):  # the client gave up long ago
                    self._send(200, {}, data, head)
            elif fault == "500":
                self._send(500, {"Content-Type": "text/plain"}, b"Internal Error", head)
            elif fault == "429":
                self._error(429, None, "Too many requests", head, **{"Retry-After": "1"})
            elif fault == "short":
                server.record(Request(self.command, host, self.path, None, 200, len(data), False))
                self.send_response(200)
                self.send_header("Content-Length", str(len(data) + 1000))
                self.end_headers()
                self.wfile.write(data)
                self.close_connection = True
            return True

        def _cdn(self, path: str, head: bool) -> None:
            if path == "/login":  # where the `away` fault sends a request: another host's HTML page
                self._send(200, {"Content-Type": "text/html; charset=utf-8"}, HTML_PAGE, head)
                return
            m = re.fullmatch(r"/blobs/([0-9a-f]{64})", path)
            data = server.blobs.get(m.group(1)) if m else None
            if data is None:
                self._send(404, {"Content-Type": "text/plain"}, b"NoSuchKey", head)
                return
            self._body(data, {"ETag": f'"{m.group(1)}"'}, head)

        def _body(self, data: bytes, headers: dict[str, str], head: bool) -> None:
            rng = _parse_range(self.headers.get("Range"), len(data))
            headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", **headers}
            if rng is None:
                self._send(200, headers, data, head)
                return
            start, end = rng
            if start >= len(data):
                self._send(416, {"Content-Range": f"bytes */{len(data)}"}, b"", head)
                return
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            self._send(206, headers, data[start : end + 1], head)

    return Handler


# -- repos, built locally and deterministically ----------------------------------------------------------

TINY_LLAMA: dict = {
    "vocab_size": 128,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def build_bf16(out: Path) -> Path:
    """Write a tiny bf16 Llama (config.json, generation_config.json, model.safetensors) into `out`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY_LLAMA)).to(torch.bfloat16)
    model.save_pretrained(out)
    return out


def build_sharded(bf16_dir: Path, out: Path) -> Path:
    """Write the same weights as `bf16_dir` in two shards with a model.safetensors.index.json."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(bf16_dir / "model.safetensors")
    names = sorted(tensors)
    half = len(names) // 2
    out.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    total = 0
    for i, part in enumerate((names[:half], names[half:]), start=1):
        shard = f"model-{i:05d}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, out / shard, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, shard)
        total += sum(tensors[n].numel() * tensors[n].element_size() for n in part)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True))
    for name in ("config.json", "generation_config.json"):
        shutil.copy(bf16_dir / name, out / name)
    return out


def build_nf4(bf16_dir: Path, out: Path) -> Path:
    """Write a bitsandbytes nf4 checkpoint of `bf16_dir` (quantized on the CPU, saved by transformers)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    qcfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(bf16_dir, quantization_config=qcfg, device_map="cpu")
    model.save_pretrained(out)
    return out


def build_repos(root: Path) -> dict[str, Repo]:
    """Return the test hub's repos, their files built under `root`."""
    bf16 = build_bf16(root / "tiny-llama")
    sharded = build_sharded(bf16, root / "tiny-llama-sharded")
    nf4 = build_nf4(bf16, root / "tiny-llama-nf4")
    return {
        "acme/tiny-llama": Repo(_files(bf16)),
        "acme/tiny-llama-sharded": Repo(_files(sharded)),
        "acme/tiny-llama-nf4": Repo(_files(nf4)),
        "acme/gated-llama": Repo(_files(bf16), access="gated"),
        "acme/forbidden-llama": Repo(_files(bf16), access="forbidden"),
        "acme/broken-llama": Repo(_files(bf16), access="error500"),
        # A safetensors file whose header is not JSON.
        "acme/bad-header": Repo(
            {
                "config.json": (bf16 / "config.json").read_bytes(),
                "model.safetensors": b"\x10\0\0\0\0\0\0\0not json at all!",
            }
        ),
        # A repo without a config.json: the "file missing in the repo" case.
        "acme/weights-only": Repo({"model.safetensors": (bf16 / "model.safetensors").read_bytes()}),
    }


# -- pytest fixtures -------------------------------------------------------------------------------------

# Module-level values huggingface_hub reads from the environment once, at import (huggingface_hub/constants.py).
# A test process imports it once, so the fixtures set both the environment (for subprocesses) and these.
_CONSTANTS_FROM_ENV = {
    "ENDPOINT": "HF_ENDPOINT",
    "HF_HOME": "HF_HOME",
    "HF_HUB_CACHE": "HF_HUB_CACHE",
    "HF_HUB_OFFLINE": "HF_HUB_OFFLINE",
    "HF_HUB_ETAG_TIMEOUT": "HF_HUB_ETAG_TIMEOUT",
    "HF_HUB_DOWNLOAD_TIMEOUT": "HF_HUB_DOWNLOAD_TIMEOUT",
    "HF_TOKEN_PATH": "HF_TOKEN_PATH",
}


def point_hub_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, home: Path, offline: bool = False) -> None:
    """Point huggingface_hub (this process and subprocesses) at `endpoint`, with a fresh cache under `home`."""
    from huggingface_hub import constants

    values = {
        "ENDPOINT": endpoint,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_HUB_OFFLINE": offline,
        # A loopback hub answers in milliseconds: short timeouts keep a dead endpoint's failure quick.
        "HF_HUB_ETAG_TIMEOUT": 2,
        "HF_HUB_DOWNLOAD_TIMEOUT": 5,
        "HF_TOKEN_PATH": str(home / "token"),
    }
    for attr, env in _CONSTANTS_FROM_ENV.items():
        value = values[attr]
        monkeypatch.setattr(constants, attr, value)
        monkeypatch.setenv(env, ("1" if value else "0") if isinstance(value, bool) else str(value))
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(home / ".agent_harnesses.json"))
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_IMPLICIT_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    for var in ("http_proxy", "https_proxy", "all_proxy"):  # the hub is on loopback: no proxy between
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")


_BUILT: dict[str, dict[str, Repo]] = {}  # each test module registers its own session fixture: build once


@pytest.fixture(scope="session")
def hub_repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Repo]:
    """The test hub's repos, built once per session (a few seconds: a tiny Llama, sharded and nf4 copies)."""
    if "repos" not in _BUILT:
        _BUILT["repos"] = build_repos(tmp_path_factory.mktemp("hub-repos"))
    return _BUILT["repos"]


@pytest.fixture(scope="session")
def hub_server(hub_repos: dict[str, Repo]) -> Iterator[HubServer]:
    with HubServer(hub_repos) as server:
        yield server


@pytest.fixture
def hub(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> HubServer:
    """The loopback hub, online, with huggingface_hub pointed at it, a fresh HF_HOME and an empty request log."""
    point_hub_at(monkeypatch, hub_server.url, tmp_path / "hf-home")
    hub_server.clear_log()
    return hub_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def closed_endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """An endpoint with nothing listening (connection refused), huggingface_hub pointed at it."""
    url = f"http://127.0.0.1:{free_port()}"
    point_hub_at(monkeypatch, url, tmp_path / "hf-home")
    return url
