"""Reading a model repo on the hub through huggingface_hub: config.json, the commit a revision resolves to,
and the bytes the safetensors store, read from their headers (no weights are downloaded).

Each request is made once. With nothing cached, `hf_hub_download` retries a failed metadata request five
times with backoff (~23 s of "Retrying in 8s", huggingface_hub file_download.py, the `_ETAG_RETRY_TIMEOUT`
path); a CLI should answer a dead endpoint in seconds. So qcli first asks for the file's metadata itself
with `get_hf_file_metadata`, which does not retry, and only then lets `hf_hub_download` fetch the file.
HF_TOKEN, HF_HOME, HF_ENDPOINT, HF_HUB_OFFLINE and the cache are huggingface_hub's, read there at call time.

The downloads themselves (config.json, the safetensors index and headers) go through huggingface_hub,
which retries a broken transfer five times and waits out each 429's Retry-After, printing a warning line
each time. qcli runs them in a worker thread with a deadline (`_bounded`): its retry lines are kept
from the terminal, and a config.json that has not arrived in HF_HUB_DOWNLOAD_TIMEOUT + 5 seconds (15 by
default) is one line saying so.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from qcli.errors import (
    HubAccessDenied,
    HubFileMissing,
    HubGated,
    HubIncomplete,
    HubNotAHub,
    HubOffline,
    HubRedirectLoop,
    HubRepoNotFound,
    HubRevisionNotFound,
    HubServerError,
    HubUnreachable,
    UsageError,
    debug_enabled,
)

DEFAULT_REVISION = "main"  # huggingface_hub.constants.DEFAULT_REVISION
_COMMIT = re.compile(r"[0-9a-f]{40}")  # a full commit sha (huggingface_hub's REGEX_COMMIT_HASH)
HUB_HOSTS = ("huggingface.co", "www.huggingface.co", "hf.co")  # a pasted URL's host, besides HF_ENDPOINT's
_NAME = r"[A-Za-z0-9][\w.\-]*"
# org/name, or a legacy one-segment id (gpt2) as the hub still serves it at https://huggingface.co/gpt2
_URL = re.compile(
    rf"^https?://(?P<host>[^/]+)/(?P<repo>{_NAME}(?:/{_NAME})?)"
    r"(?:/(?P<view>tree|blob|resolve)/(?P<rev>[^/]+)(?:/(?P<path>.*))?)?/?$",
    re.IGNORECASE,
)
# What a token may hold: visible ASCII (hub tokens are `hf_` and letters); it goes into an HTTP header.
_TOKEN = re.compile(r"[\x21-\x7e]+")
T = TypeVar("T")


class HeadersUnavailable(Exception):
    """The hub did not give the safetensors headers (no answer, a server error, too slow): the estimate
    goes on without stored bytes, and this message says why."""


class _TimedOut(Exception):
    """A huggingface_hub call that had not finished by its deadline; `status` is 429 when it was being
    rate limited (its last warning said so)."""

    def __init__(self, seconds: float, last_warning: str | None) -> None:
        super().__init__(f"no complete answer in {seconds:g} s")
        self.seconds = seconds
        self.status = 429 if last_warning and last_warning.startswith("Rate limited") else None


class _NotAHub(Exception):
    """An answer to a file's HEAD request without the hub's X-Repo-Commit header; `location` is where a
    redirect pointed (another host's login page), None when there was none."""

    def __init__(self, url: str, location: str | None, reason: str | None = None) -> None:
        from urllib.parse import urlsplit

        moved = location is not None and urlsplit(location).netloc != urlsplit(url).netloc
        super().__init__(
            reason or (f"redirected to {urlsplit(location).netloc}" if moved else "no X-Repo-Commit header")
        )


@dataclass(frozen=True)
class HubFile:
    """A file of a hub repo on local disk and the commit it belongs to."""

    path: Path
    commit_sha: str
    came_from: str  # "hub": downloaded by this run; "cache": already in the hub's cache
    fallback: str | None = None  # why the cache was used although online: the hub did not answer


def endpoint() -> str:
    """Return the hub endpoint huggingface_hub talks to (HF_ENDPOINT, else https://huggingface.co)."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def offline() -> bool:
    """Return whether huggingface_hub is in offline mode (HF_HUB_OFFLINE)."""
    from huggingface_hub import constants

    return constants.is_offline_mode()


def parse_url(text: str) -> tuple[str, str | None] | None:
    """Return (repo_id, revision or None) of a hub model URL; None if `text` is not a URL.

    A query or fragment (`?library=transformers`, `#files`) is dropped; the revision is URL-decoded, as the
    hub's pages write a branch with a slash (`/tree/refs%2Fpr%2F1`). A file at the repo's top
    (`/blob/REV/config.json`) names the repo; a folder or a file in one (`/tree/REV/unet`,
    `/blob/REV/text_encoder/config.json`) is refused: the top-level config.json would be another model."""
    if not re.match(r"^https?://", text, re.IGNORECASE):
        return None
    from urllib.parse import unquote

    m = _URL.match(re.split(r"[?#]", text, maxsplit=1)[0])
    own_host = re.sub(r"^https?://", "", endpoint(), flags=re.IGNORECASE).split("/")[0].lower()
    if m is None or m.group("host").lower() not in (*HUB_HOSTS, own_host):
        raise UsageError(f"{text}: not a model URL on the hub", "give https://huggingface.co/ORG/NAME[/tree/REVISION]")
    if m.group("repo").split("/")[0].lower() in {"datasets", "spaces", "buckets", "models", "docs", "collections"}:
        raise UsageError(f"{text}: not a model repo", "qcli reads model repos")
    rev, path = m.group("rev"), unquote(m.group("path") or "").strip("/")  # unet%2Fconfig.json is unet/config.json
    pr = re.fullmatch(r"(?P<ref>(?:pr|convert)/[^/]+)/?(?P<path>.*)", path) if rev == "refs" else None
    if pr:  # `/tree/refs/pr/1` typed without the page's %2F: the revision is refs/pr/1
        rev, path = f"refs/{pr.group('ref')}", pr.group("path")
    if "/" in path or (path and m.group("view") == "tree"):  # a folder, or a file in one: not what qcli reads
        raise UsageError(
            f"{text}: names {unquote(path)[:80]!r} inside the repo, and qcli reads the config.json at its top",
            "models in a repo's subfolder are not supported: give https://huggingface.co/ORG/NAME[/tree/REVISION]",
        )
    return m.group("repo"), unquote(rev) if rev is not None else None


def schemeless_url(text: str) -> str | None:
    """Return `text` as an https URL when it starts with a hub host (`huggingface.co/org/name`, as copied
    from an address bar that hides the scheme); None otherwise. Only asked once no local path has that name."""
    host = text.split("/", 1)[0].lower()
    return f"https://{text}" if "/" in text and host in HUB_HOSTS else None


def check_token(token: str | None) -> None:
    """Raise a UsageError for a --token (or HF_TOKEN) that cannot be a token: empty, or holding spaces,
    control or non-ASCII characters (it would go into an HTTP header as is). The token is never shown."""
    hint = f"copy it again from {endpoint()}/settings/tokens"
    if token is not None and not _TOKEN.fullmatch(token):
        problem = "is empty" if not token.strip() else "holds spaces, control or non-ASCII characters"
        raise UsageError(f"--token {problem}: not a hub token", f"{hint}, or leave --token out to use HF_TOKEN")
    implicit = _implicit_token() if token is None else None
    if implicit is not None and not _TOKEN.fullmatch(implicit):
        raise UsageError("HF_TOKEN holds spaces, control or non-ASCII characters: not a hub token", hint)


def _failures() -> tuple[type[BaseException], ...]:
    """Return the exception types that mean "the hub did not give the file" (all sorted by _raise_for)."""
    # huggingface_hub 2.x's HTTP client: its request errors (transport, too many redirects, decoding) mean
    # "no usable answer"
    import httpx2
    from huggingface_hub import errors

    return errors.HfHubHTTPError, errors.FileMetadataError, httpx2.RequestError, _TimedOut, _NotAHub


def _cause(exc: BaseException) -> BaseException:
    """Return what a LocalEntryNotFoundError stands for when hf_hub_download raised it online: its own HEAD
    request failed (no answer, no hub headers) and nothing was cached; it keeps that failure as __cause__."""
    from huggingface_hub import errors

    if isinstance(exc, errors.LocalEntryNotFoundError) and isinstance(exc.__cause__, _failures()):
        return exc.__cause__
    return exc


def _raise_for(exc: BaseException, repo_id: str, revision: str, filename: str, token: str | None = None) -> None:
    """Raise the HubError that names why the hub did not give the file."""
    from huggingface_hub import errors

    where = {"repo_id": repo_id, "revision": revision, "filename": filename, "endpoint": endpoint()}
    status = _status(exc)
    if isinstance(exc, errors.GatedRepoError):  # a RepositoryNotFoundError: first
        raise HubGated(**where, status=status) from exc
    if isinstance(exc, errors.RepositoryNotFoundError):
        raise HubRepoNotFound(**where, status=status) from exc
    if isinstance(exc, errors.RevisionNotFoundError):
        raise HubRevisionNotFound(**where, status=status) from exc
    if isinstance(exc, errors.RemoteEntryNotFoundError):
        raise HubFileMissing(**where, status=status) from exc
    if status in (401, 403):
        detail = None if _token_sent(token) else "no token"
        if detail is None and status == 401 and _INVALID_TOKEN in _error_message(exc):
            detail = f"invalid token: {_token_source(token)}"
        raise HubAccessDenied(**where, status=status, detail=detail) from exc
    if status is not None:
        raise HubServerError(**where, status=status) from exc
    kind, detail = _no_answer(exc)
    raise kind(**where, detail=detail) from exc


def _no_answer(exc: BaseException) -> tuple[type[HubUnreachable], str]:
    """Return why a request got no usable answer: too slow or cut short, redirected in a loop, or no
    connection at all; and the detail the message shows."""
    import httpx2
    from huggingface_hub import errors

    if isinstance(exc, _TimedOut):
        return HubIncomplete, str(exc)
    if isinstance(exc, _NotAHub):
        return HubNotAHub, str(exc)
    if isinstance(exc, errors.FileMetadataError):  # huggingface_hub's message names the header it missed
        text = str(exc)
        missing = "ETag" if "ETag" in text else "Content-Length" if "Content-Length" in text else "X-Repo-Commit"
        return HubNotAHub, f"no {missing} header"
    if isinstance(exc, httpx2.TimeoutException) and not isinstance(exc, httpx2.ConnectTimeout):
        return HubIncomplete, f"no complete answer in time: {type(exc).__name__}"
    if isinstance(exc, (httpx2.RemoteProtocolError, httpx2.ReadError, httpx2.DecodingError)):
        return HubIncomplete, f"cut short: {type(exc).__name__}"
    if isinstance(exc, httpx2.TooManyRedirects):
        return HubRedirectLoop, type(exc).__name__
    return HubUnreachable, type(exc).__name__


def _why(exc: BaseException) -> str:
    """Return a hub failure in a few words for a note: its status, or what the answer lacked."""
    status = _status(exc)
    return f"HTTP {status}" if status is not None else _no_answer(exc)[1]


# What the hub says (X-Error-Message) to a token it does not know: mistyped, expired or revoked.
_INVALID_TOKEN = "Invalid credentials in Authorization header"


def _error_message(exc: BaseException) -> str:
    """Return the hub's X-Error-Message of a failed request; '' when there is none."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return str(headers.get("X-Error-Message") or "") if headers is not None else ""


def _token_source(token: str | None) -> str:
    """Return where the token huggingface_hub sent came from, for a message (never the token itself)."""
    if token:
        return "--token"
    return "HF_TOKEN" if _implicit_token() else "the token saved by `hf auth login`"


def _token_sent(token: str | None) -> bool:
    """Return whether huggingface_hub sent a token: --token, HF_TOKEN or the one `hf auth login` saved."""
    if token:
        return True
    from huggingface_hub import constants, get_token

    return not constants.HF_HUB_DISABLE_IMPLICIT_TOKEN and get_token() is not None


def _status(exc: BaseException) -> int | None:
    """Return the HTTP status of a hub error; None when there was no answer."""
    from huggingface_hub import errors

    if isinstance(exc, _TimedOut):
        return exc.status
    response = exc.response if isinstance(exc, errors.HfHubHTTPError) else None
    return response.status_code if response is not None else None


def _deadline(transfers: int = 1) -> float:
    """Seconds hub transfers may take in all, retries included: HF_HUB_DOWNLOAD_TIMEOUT (10) each, + 5."""
    from huggingface_hub import constants

    return transfers * constants.HF_HUB_DOWNLOAD_TIMEOUT + 5


def _bounded(call: Callable[[], T], seconds: float) -> T:
    """Return `call()` run in a worker thread, its exception raised here; _TimedOut after `seconds`.

    huggingface_hub's retry warnings ("Trying to resume download", "Rate limited. Waiting…") are kept
    from the terminal (with --debug they are shown); the last one tells a rate limit from a stall. A
    thread still running at the deadline is left to the process's exit (it is a daemon).
    """
    import logging
    import threading

    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the caller's thread as is
            box["error"] = exc

    class Last(logging.Handler):
        message: str | None = None

        def emit(self, record: logging.LogRecord) -> None:
            self.message = record.getMessage()

    logger, last = logging.getLogger("huggingface_hub"), Last(logging.WARNING)
    quiet = not debug_enabled()
    saved = logger.handlers[:], logger.propagate
    if quiet:
        logger.handlers, logger.propagate = [last], False
    worker = threading.Thread(target=run, name="qcli-hub", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():  # its later warnings stay quiet too: the caller is about to say what happened
        raise _TimedOut(seconds, last.message)
    if quiet:
        logger.handlers, logger.propagate = saved
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def _is_refusal(exc: BaseException) -> bool:
    """Return True when the hub answered "no such thing" or "not for you": a cached copy must not hide that."""
    status = _status(exc)
    return status is not None and status < 500 and status != 429


def cached_file(repo_id: str, filename: str, revision: str) -> Path | None:
    """Return the cached copy of `filename` at `revision` (branch, tag or commit); None if not cached.

    Reads the hub cache's documented layout as huggingface_hub's `try_to_load_from_cache` does
    (models--ORG--NAME/refs/REVISION holds a commit, snapshots/COMMIT/FILE the file), without importing
    huggingface_hub's HTTP stack: that import is about half the time of a whole estimate.
    """
    from huggingface_hub import constants

    repo_dir = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    ref = repo_dir / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    path = repo_dir / "snapshots" / commit / filename
    return path if path.is_file() else None


def check_repo_id(repo_id: str) -> None:
    """Raise a UsageError when huggingface_hub would refuse `repo_id` (`a..b/c`, over 96 characters, ...).

    Checked only on the way to the network: a cached repo was valid when it was downloaded.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        first = " ".join(str(exc).split())[:160]
        raise UsageError(f"{repo_id[:100]!r} is not a valid hub id: {first}", "hub ids look like org/name") from None


def _commit_of(path: Path) -> str:
    # The cache keeps each file under snapshots/<commit sha>/ (huggingface_hub's cache layout).
    return path.parent.name


def fetch(repo_id: str, filename: str, revision: str | None, token: str | None) -> HubFile:
    """Return `filename` of the repo at `revision`, from the hub or from the cache.

    Offline (HF_HUB_OFFLINE), only the cache is read. Online, the file's metadata is asked for once: a
    refusal (no such repo, gated, revision or file not found, 401/403) is raised; no answer or a server
    error falls back to a cached copy of the revision when there is one, as huggingface_hub does.
    """
    rev = revision or DEFAULT_REVISION
    if offline() or _COMMIT.fullmatch(rev):
        # Nothing to ask the hub: offline, or a commit's files, which never change (hf_hub_download
        # shortcuts a cached commit the same way).
        path = cached_file(repo_id, filename, rev)
        if path is not None:
            return HubFile(path, _commit_of(path), "cache")
        if offline():
            check_repo_id(repo_id)
            raise HubOffline(repo_id=repo_id, revision=rev, filename=filename, endpoint=endpoint())
    try:
        commit = _probe_commit(repo_id, filename, rev, token)
    except TimeoutError as exc:  # asked once: huggingface_hub would wait as long again
        return _cache_or_raise(exc, repo_id, filename, rev)
    path = cached_file(repo_id, filename, commit) if commit else None
    if path is not None:
        return HubFile(path, commit, "cache")
    check_repo_id(repo_id)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.file_download import get_hf_file_metadata, hf_hub_url

    def download() -> HubFile:
        url = hf_hub_url(repo_id, filename, revision=rev)
        meta = get_hf_file_metadata(url, token=token)
        if meta.commit_hash is None:  # hf_hub_download would refuse it too, and call it a connection problem
            raise _NotAHub(url, meta.location)
        if not _COMMIT.fullmatch(meta.commit_hash):  # hf_hub_download would file the config under that name
            shown = meta.commit_hash[:40].encode("ascii", "backslashreplace").decode()
            raise _NotAHub(url, meta.location, f"X-Repo-Commit {shown!r} is not a commit sha")
        commit = meta.commit_hash
        path = cached_file(repo_id, filename, commit)
        if path is not None:
            return HubFile(path, commit, "cache")
        path = Path(hf_hub_download(repo_id, filename, revision=rev, token=token))
        return HubFile(path, _commit_of(path), "hub")

    try:
        return _bounded(download, _deadline())
    except _failures() as exc:
        return _cache_or_raise(exc, repo_id, filename, rev, token)
    except OSError as exc:  # writing the hub's cache, or a transfer that ended short ("Consistency check failed")
        if _cause(exc) is not exc:
            return _cache_or_raise(_cause(exc), repo_id, filename, rev, token)
        _raise_os_error(exc, repo_id, filename, rev)
        raise


def _raise_os_error(exc: OSError, repo_id: str, filename: str, revision: str) -> None:
    """Raise the error for an OSError of a download: a short transfer, or the hub cache not writable."""
    from huggingface_hub import constants

    if exc.errno is None:  # huggingface_hub's own: the file it received is not the size the hub announced
        where = {"repo_id": repo_id, "revision": revision, "filename": filename, "endpoint": endpoint()}
        raise HubIncomplete(**where, detail=f"cut short: {str(exc)[:80]}") from exc
    raise UsageError(
        f"cannot write {filename} of {repo_id} into the hub cache {constants.HF_HUB_CACHE}: {exc.strerror}",
        "set HF_HOME (or HF_HUB_CACHE) to a writable directory with free space",
    ) from exc


def _cache_or_raise(
    exc: BaseException, repo_id: str, filename: str, revision: str, token: str | None = None
) -> HubFile:
    """Return the cached copy when the hub gave no answer or a server error; raise the HubError otherwise."""
    cached = None if _is_refusal(exc) else cached_file(repo_id, filename, revision)
    if cached is None:
        _raise_for(exc, repo_id, revision, filename, token)
        raise exc
    return HubFile(cached, _commit_of(cached), "cache", fallback=f"the hub at {endpoint()} failed ({_why(exc)})")


def _probe_commit(repo_id: str, filename: str, revision: str, token: str | None) -> str | None:
    """Return the commit `revision` is at, asked with one HEAD request, when a copy of the repo is cached.

    The warm path's only question to the hub. huggingface_hub's HTTP client takes longer to import than
    a whole local estimate, and even the standard library's http.client pulls in the email package
    (~25 ms, docs/bench-hub.md), so this one request is written on a socket: the same URL and
    `X-Repo-Commit` header `get_hf_file_metadata` reads, the token huggingface_hub would send from --token
    or HF_TOKEN, TLS verified with the system's certificates, no redirects followed. Anything but a plain
    200 with a commit returns None, and huggingface_hub then asks again and names what went wrong.
    Nothing cached, or a proxy set for the endpoint's scheme (huggingface_hub's client goes through it;
    this probe would not): None, no request.
    """
    from huggingface_hub import constants

    if not (Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}").is_dir():
        return None
    from urllib.parse import quote, urlsplit

    # The URL hf_hub_url builds: the template carries HF_ENDPOINT.
    template = constants.HUGGINGFACE_CO_URL_TEMPLATE
    url = urlsplit(template.format(repo_id=repo_id, revision=quote(revision, safe=""), filename=quote(filename)))
    if url.scheme not in ("http", "https") or not url.hostname or _proxied(url.scheme):
        return None
    token = token or _implicit_token()
    lines = [f"HEAD {url.path or '/'} HTTP/1.1", f"Host: {url.netloc.rpartition('@')[2]}", "User-Agent: qcli"]
    lines += ["Accept-Encoding: identity", "Connection: close"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    try:
        head = _head_response(url.scheme, url.hostname, url.port, "\r\n".join(lines) + "\r\n\r\n")
    except TimeoutError:
        raise
    except (OSError, ValueError, UnicodeError):
        return None  # huggingface_hub asks again and names the failure
    status, headers = head
    commit = headers.get("x-repo-commit") if status == 200 else None
    return commit if commit and _COMMIT.fullmatch(commit) else None


def _head_response(scheme: str, host: str, port: int | None, request: str) -> tuple[int, dict[str, str]]:
    """Send one HEAD request and return (status, headers with lower-case names). Raises OSError/ValueError."""
    import socket

    from huggingface_hub import constants

    port = port or (443 if scheme == "https" else 80)
    with socket.create_connection((host, port), timeout=constants.HF_HUB_ETAG_TIMEOUT) as raw:
        sock = raw
        if scheme == "https":
            import ssl

            sock = ssl.create_default_context().wrap_socket(raw, server_hostname=host)
        sock.sendall(request.encode("latin-1"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(16384)
            if not chunk or len(data) > 65536:
                raise ValueError("no complete response head")
            data += chunk
    status_line, *header_lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    version, status, *_ = status_line.split(" ", 2)
    if not version.startswith("HTTP/1."):
        raise ValueError(f"not an HTTP/1 response: {status_line[:40]!r}")
    headers = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(status), headers


def _proxied(scheme: str) -> bool:
    """Return True when the environment names a proxy for `scheme` (HTTPS_PROXY, ALL_PROXY, any case)."""
    import os

    names = (f"{scheme}_proxy", "all_proxy")
    return any(os.environ.get(n) or os.environ.get(n.upper()) for n in names)


def _implicit_token() -> str | None:
    """Return the token huggingface_hub sends unasked from the environment (HF_TOKEN); None otherwise.

    A token saved by `hf auth login` is not read here: without it a private repo answers 401/404 and the
    request is made again through huggingface_hub, which reads it.
    """
    import os

    from huggingface_hub import constants

    if constants.HF_HUB_DISABLE_IMPLICIT_TOKEN:
        return None
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or ""
    return token.replace("\r", "").replace("\n", "").strip() or None  # cleaned as huggingface_hub does


def _headers_record(cache_dir: Path, repo_id: str, commit: str) -> Path:
    host = re.sub(r"[^\w.\-]", "_", re.sub(r"^https?://", "", endpoint()))
    return cache_dir / "safetensors-headers" / host / repo_id.replace("/", "--") / f"{commit}.json"


@dataclass(frozen=True)
class StoredHeaders:
    """What the safetensors headers of the files transformers loads say: bytes per stored dtype, and the first
    `*.weight` tensor stored as integers or booleans (file, tensor, dtype), None when there is none."""

    bytes_by_dtype: dict[str, int]
    non_float_weight: tuple[str, str, str] | None = None
    # the index's metadata.total_size (None: no index, or it gives none): a note when it disagrees
    index_total_size: int | None = None


def stored_bytes(
    repo_id: str,
    commit: str,
    token: str | None,
    cache_dir: Path,
    online: bool = True,
    revision: str | None = None,
) -> StoredHeaders | None:
    """Return what the repo's safetensors headers at `commit` say (bytes per dtype: the sum of the tensors'
    `data_offsets` spans), from the headers alone: model.safetensors, else the shards of
    model.safetensors.index.json, the files transformers loads. Each header is read with Range requests
    through huggingface_hub's HTTP client and checked by the code that checks a local file
    (qcli.model.safetensors_header), so a damaged file on the hub and its local copy get the same message.
    None when the repo has no safetensors, or when not `online` (or HF_HUB_OFFLINE) and not recorded.

    A refusal (a shard the index lists and the repo lacks, gated, not found) and a bad header or index
    raise, exit 2; no answer, a server error or a transfer past the deadline raise HeadersUnavailable.
    A commit's files never change, so the figures are recorded under `cache_dir` for the next run.
    """
    record = _headers_record(cache_dir, repo_id, commit)
    is_offline = not online or offline()
    recorded = _read_record(record, is_offline)
    if recorded is not None:
        return recorded
    if is_offline:
        return _from_snapshot(repo_id, commit)
    from huggingface_hub import errors

    from qcli.model.safetensors_header import INDEX_NAME, SafetensorsError

    rev = revision or commit
    where = f"{repo_id} at {rev}"
    try:
        declared: list[int | None] = [None]
        headers = _bounded(lambda: _remote_headers(repo_id, commit, token, where, declared), _deadline(3))
    except SafetensorsError:
        raise
    except _failures() as exc:
        if _is_refusal(exc):
            _raise_for(exc, repo_id, rev, _requested_file(exc) or "model.safetensors", token)
        raise HeadersUnavailable(f"the hub at {endpoint()} did not give the safetensors headers ({_why(exc)})") from exc
    except errors.RemoteEntryNotFoundError as exc:  # raised by hf_hub_download for the index: a refusal
        _raise_for(exc, repo_id, rev, INDEX_NAME, token)
        raise
    except OSError as exc:
        cause = _cause(exc)  # the index's download: hf_hub_download's HEAD got no usable answer
        if cause is not exc and not _is_refusal(cause):
            raise HeadersUnavailable(f"the hub at {endpoint()} did not give {INDEX_NAME} ({_why(cause)})") from exc
        if cause is not exc:
            _raise_for(cause, repo_id, rev, INDEX_NAME, token)
        _raise_os_error(exc, repo_id, INDEX_NAME, rev)
        raise
    if headers is None:
        return None
    found = _summed(headers, declared[0])
    _write_record(record, found)
    return found


_FIRST_BYTES = 100_000  # read with the header length, as huggingface_hub does: most headers fit (its hf_api.py)


def _remote_headers(
    repo_id: str, commit: str, token: str | None, where: str, declared: list[int | None]
) -> dict[str, dict[str, tuple[str, tuple[int, ...], int]]] | None:
    """Return {file: checked header entries} of the safetensors transformers loads from the repo at `commit`
    (model.safetensors, else the index's shards, 8 at a time); None when the repo has neither file. The
    index's metadata.total_size, if any, is put in `declared[0]`."""
    from concurrent.futures import ThreadPoolExecutor

    from huggingface_hub import errors, hf_hub_download

    from qcli.model.safetensors_header import (
        INDEX_NAME,
        SINGLE_NAME,
        check_index_covered,
        declared_total_size,
        read_index,
        shard_names,
    )

    try:
        return {SINGLE_NAME: _remote_header(repo_id, SINGLE_NAME, commit, token, where)}
    except errors.RemoteEntryNotFoundError:
        pass  # no model.safetensors: the index, as transformers reads it next
    try:
        path = Path(hf_hub_download(repo_id, INDEX_NAME, revision=commit, token=token))
    except errors.RemoteEntryNotFoundError:
        return None  # neither: no safetensors (pytorch_model.bin, .gguf, ...)
    shown = f"{where}: {INDEX_NAME}"
    data = read_index(path, shown)
    names = shard_names(shown, data)
    with ThreadPoolExecutor(max_workers=min(8, len(names)), thread_name_prefix="qcli-hub") as pool:
        futures = {name: pool.submit(_remote_header, repo_id, name, commit, token, where) for name in names}
    headers = {name: futures[name].result() for name in names}  # the first failure in name order is raised
    weight_map = data["weight_map"]  # type: ignore[index]  # checked by shard_names
    check_index_covered(shown, weight_map, {name for entries in headers.values() for name in entries})
    declared[0] = declared_total_size(data)
    return headers


def _remote_header(
    repo_id: str, filename: str, commit: str, token: str | None, where: str
) -> dict[str, tuple[str, tuple[int, ...], int]]:
    """Return the checked header entries of one safetensors file of the repo, read with Range requests.

    The file's size comes from the answer's Content-Range (a 416 to the first range: an empty file), so the
    header length and the data_offsets are checked against it as a local file's are. A server that ignores
    Range and sends the whole file is read no further than the header."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    from qcli.model.safetensors_header import SafetensorsError, header_length, looks_like_html, parse_header

    shown = f"{where}: {filename}"
    url = hf_hub_url(repo_id, filename, revision=commit)
    headers = build_hf_headers(token=token)
    timeout = constants.HF_HUB_DOWNLOAD_TIMEOUT

    def get(start: int, end: int) -> tuple[bytes, int | None]:
        want = end - start + 1
        with get_session().stream(
            "GET", url, headers={**headers, "Range": f"bytes={start}-{end}"}, timeout=timeout
        ) as response:
            if response.status_code == 416:  # nothing at `start`: the file is shorter
                return b"", _total_size(response)
            hf_raise_for_status(response)
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) >= want:
                    break
            if response.status_code == 200:  # the whole file from byte 0, not the range
                return bytes(body[start : start + want]), _content_length(response)
            return bytes(body[:want]), _total_size(response)

    first, size = get(0, _FIRST_BYTES + 7)
    try:
        length = header_length(shown, first, size)
    except SafetensorsError as exc:
        if not looks_like_html(first):
            raise
        raise UsageError(  # the message a local copy gets, and where such a page comes from
            exc.message,
            "the hub, or a proxy between, sent a web page instead of the file: check the network and HF_ENDPOINT",
        ) from None
    raw = first[8 : 8 + length]
    if len(raw) < length:  # a header past the first request's bytes
        more, _ = get(8 + len(raw), 7 + length)
        raw += more
        if len(raw) < length:
            header_length(shown, first, 8 + len(raw))  # the file ends inside the header: say so
    return parse_header(shown, raw, None if size is None else size - 8 - length)


def _total_size(response: object) -> int | None:
    """Return the file size a 206 or 416 answer's Content-Range gives (`bytes 0-99/1234`, `bytes */1234`)."""
    value = getattr(response, "headers", {}).get("Content-Range") or ""
    m = re.fullmatch(r"\s*bytes\s+(?:\d+-\d+|\*)/(\d{1,20})\s*", value)
    return int(m.group(1)) if m else None


def _content_length(response: object) -> int | None:
    value = getattr(response, "headers", {}).get("Content-Length") or ""
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 20 else None


def _summed(
    headers: dict[str, dict[str, tuple[str, tuple[int, ...], int]]], index_total_size: int | None = None
) -> StoredHeaders:
    """Return the bytes per dtype of the files' headers and their first integer or boolean `*.weight`."""
    from qcli.model.safetensors_header import non_float_weight

    totals: dict[str, int] = {}
    for entries in headers.values():
        for dtype, _, nbytes in entries.values():
            totals[dtype] = totals.get(dtype, 0) + nbytes
    return StoredHeaders(totals, non_float_weight(headers), index_total_size)


def _from_snapshot(repo_id: str, commit: str) -> StoredHeaders | None:
    """Return what the headers of a snapshot the hub cache holds whole (`hf download`, an earlier load) say,
    read as a local model's files are; None when the files transformers loads are not all there."""
    from qcli.model.safetensors_header import (
        INDEX_NAME,
        SINGLE_NAME,
        checkpoint_files,
        declared_total_size,
        read_header,
        read_index,
    )
    from qcli.model.safetensors_header import stored_bytes as local_stored_bytes

    config = cached_file(repo_id, "config.json", commit)
    if config is None:
        return None
    try:
        files = checkpoint_files(config.parent)
    except UsageError:  # an index cached alone and damaged: the shards are not there to read either
        return None
    if not files or not all(f.is_file() for f in files):
        return None
    totals = local_stored_bytes(config.parent)
    if totals is None:
        return None
    declared = None
    if files[0].name != SINGLE_NAME:
        declared = declared_total_size(read_index(config.parent / INDEX_NAME))
    return StoredHeaders(totals, _summed({f.name: read_header(f) for f in files}).non_float_weight, declared)


def _read_record(record: Path, offline: bool = False) -> StoredHeaders | None:
    """Return what an earlier run recorded; None when there is no record or it is not one (truncated, edited,
    another format): it is then read from the hub again and written anew. A record written before qcli
    recorded integer weights is used offline (that check is then skipped) and read again online."""
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
        totals = data["stored_bytes_by_dtype"]
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        return None
    if not isinstance(totals, dict) or not all(
        isinstance(k, str) and type(v) is int and v >= 0 for k, v in totals.items()
    ):
        return None
    declared = data.get("index_total_size")
    declared = declared if type(declared) is int and declared >= 0 else None
    if "non_float_weight" not in data:
        return StoredHeaders(totals, None, declared) if offline else None
    found = data["non_float_weight"]
    if found is None:
        return StoredHeaders(totals, None, declared)
    if isinstance(found, list) and len(found) == 3 and all(isinstance(x, str) for x in found):
        return StoredHeaders(totals, (found[0], found[1], found[2]), declared)
    return None


def _write_record(record: Path, found: StoredHeaders) -> None:
    """Record the figures for the next run; a cache that cannot be written only costs that run the requests."""
    import os

    data = {
        "stored_bytes_by_dtype": found.bytes_by_dtype,
        "non_float_weight": found.non_float_weight,
        "index_total_size": found.index_total_size,
    }
    partial = record.with_suffix(f".{os.getpid()}.partial")
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(data))
        partial.replace(record)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink()


def has_file(repo_id: str, filename: str, commit: str, token: str | None) -> bool | None:
    """Return whether the repo holds `filename` at `commit`: the cache, else one HEAD request; None when that
    cannot be known (offline and not cached, or the hub gave no answer)."""
    if cached_file(repo_id, filename, commit) is not None:
        return True
    if offline():
        return None
    from huggingface_hub import errors
    from huggingface_hub.file_download import get_hf_file_metadata, hf_hub_url

    try:
        _bounded(lambda: get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=commit), token=token), _deadline())
    except errors.RemoteEntryNotFoundError:
        return False
    except (*_failures(), OSError):
        return None
    return True


def _requested_file(exc: BaseException) -> str | None:
    """Return the repo file a failed hub request asked for (`…/resolve/REV/FILE`), URL-decoded."""
    from urllib.parse import unquote

    response = getattr(exc, "response", None)
    try:
        path = str(response.request.url.path) if response is not None else ""
    except Exception:  # a response built without a request
        return None
    _, sep, rest = path.partition("/resolve/")
    return unquote(rest.split("/", 1)[1]) if sep and "/" in rest else None


def list_files(repo_id: str, revision: str, token: str | None) -> dict[str, int] | None:
    """Return {path: size in bytes} of every file of the repo at `revision` (the hub's tree listing, one
    request per page); None when that cannot be known (offline, no answer, refused, too slow). Asked only to
    explain a failure or a repo with no safetensors, so its cost (importing HfApi, ~48 ms) is only paid then."""
    if offline():
        return None

    def listing() -> dict[str, int]:
        from huggingface_hub import HfApi
        from huggingface_hub.hf_api import RepoFile

        tree = HfApi().list_repo_tree(repo_id, recursive=True, revision=revision, token=token)
        return {f.path: int(f.size or 0) for f in tree if isinstance(f, RepoFile)}

    try:
        return _bounded(listing, _deadline())
    except (*_failures(), OSError, ValueError, TypeError, KeyError):
        return None


def _read_small_json(repo_id: str, filename: str, revision: str, token: str | None) -> object:
    """Return the parsed JSON of a small repo file (adapter_config.json, a .bin index); None when it cannot be
    had or read: it only adds detail to a message."""
    from huggingface_hub import hf_hub_download

    try:
        path = Path(_bounded(lambda: hf_hub_download(repo_id, filename, revision=revision, token=token), _deadline()))
        if path.stat().st_size > 10_000_000:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (*_failures(), OSError, ValueError, RecursionError):
        return None


def why_no_config(repo_id: str, revision: str, token: str | None) -> tuple[str, str] | None:
    """Return (what the repo holds instead, a hint) for a repo without a top-level config.json
    (qcli.model.repo_files); None when the hub's file list cannot be had."""
    from qcli.model.repo_files import no_config

    files = list_files(repo_id, revision, token)
    if files is None:
        return None

    def subfolder(folder: str) -> str:
        return (
            "qcli reads the config.json at a repo's top: "
            f"`hf download {repo_id} --include '{folder}/*' --local-dir DIR`, then give DIR/{folder}"
        )

    return no_config(files, lambda name: _read_small_json(repo_id, name, revision, token), subfolder, "repo")


def why_no_safetensors(repo_id: str, revision: str, token: str | None) -> str | None:
    """Return a note saying what weights a repo without model.safetensors or its index holds
    (qcli.model.repo_files); None when the hub's file list cannot be had."""
    from qcli.model.repo_files import no_safetensors

    files = list_files(repo_id, revision, token)
    if files is None:
        return None
    return no_safetensors(files, lambda name: _read_small_json(repo_id, name, revision, token), "repo", "on the hub")
