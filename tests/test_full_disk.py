"""A report file that cannot be written after the work (a full disk: /dev/full accepts the open and fails the
write) is one `Error:` line naming the flag, exit 1; never an internal error, and never in place of the error
that stopped verify. check_output_path already refuses the paths that can be known bad before the work."""

from __future__ import annotations

import os

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)"),
]


def _one_line(r, *needles: str) -> str:
    [line] = r.err.strip().splitlines()
    assert line.startswith("Error: ") and "internal error" not in line, line
    for needle in needles:
        assert needle in line, line
    return line


def test_verify_junit_on_a_full_disk_is_a_run_error(cli):
    r = cli("verify", "demo", "--preset", "bf16", "--junit", "/dev/full")
    assert r.code == 1, (r.code, r.err)
    _one_line(r, "--junit /dev/full", "No space left")


def test_verify_keeps_its_own_error_when_the_junit_cannot_be_written(cli):
    r = cli(
        "verify", "demo", "--preset", "bf16", "--set", "quantization.bnb_4bit_quant_type=nf4", "--junit", "/dev/full"
    )
    assert r.code == 2, (r.code, r.err)
    assert "/dev/full" not in _one_line(r)


@pytest.mark.parametrize("flag", ["--csv", "--markdown"])
def test_compare_files_on_a_full_disk_are_a_run_error(cli, flag):
    r = cli("compare", "demo", "--presets", "bf16", "--max-new-tokens", "2", flag, "/dev/full")
    assert r.code == 1, (r.code, r.err)
    _one_line(r, f"{flag} /dev/full", "No space left")
