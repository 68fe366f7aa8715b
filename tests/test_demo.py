"""The demo checkpoint appears in the cache whole or not at all, and one process builds it at a time."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from filelock import FileLock

from qcli.run import demo


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("QCLI_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fake_build(out: Path, progress=None) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (out / name).write_text("x")
    if progress:
        progress(1, 1)


def test_a_failed_build_leaves_nothing_behind(cache, monkeypatch):
    def broken(out: Path, progress=None) -> None:
        (out / "model.safetensors").write_text("half")
        raise KeyboardInterrupt  # Ctrl-C (or Terminated on SIGTERM) in the middle of the build

    monkeypatch.setattr(demo, "build_demo", broken)
    with pytest.raises(KeyboardInterrupt):
        demo.ensure_demo()
    assert not demo.demo_ready()
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


def test_a_second_process_waits_for_the_first_and_does_not_build_again(cache, monkeypatch):
    builds: list[int] = []

    def counting(out: Path, progress=None) -> None:
        builds.append(1)
        _fake_build(out, progress)

    monkeypatch.setattr(demo, "build_demo", counting)
    cache.mkdir(parents=True)
    holder = FileLock(str(cache / demo.LOCK_NAME))
    holder.acquire()  # another process is building
    result: list[Path] = []
    waiter = threading.Thread(target=lambda: result.append(demo.ensure_demo()))
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive() and not result  # it waits for the lock
    # The other process finishes: the checkpoint appears whole (a rename), then the lock is released.
    staged = cache / ".staged"
    staged.mkdir()
    _fake_build(staged)
    staged.rename(demo.demo_dir())
    holder.release()
    waiter.join(timeout=30)
    assert result == [demo.demo_dir()] and builds == []


def test_progress_reports_each_step(cache, monkeypatch):
    monkeypatch.setattr(demo, "build_demo", _fake_build)
    seen: list[tuple[int, int]] = []
    path = demo.ensure_demo(lambda done, total: seen.append((done, total)))
    assert seen == [(1, 1)] and (path / "model.safetensors").is_file()
    assert demo.ensure_demo(lambda d, t: seen.append((d, t))) == path and len(seen) == 1  # cached: no build
