"""What qcli runs on: Python, the versions of the libraries that decide memory and behaviour, and the
GPUs seen. Used by `qcli env`, `qcli --version` and the environment block of compare's reports.

Versions come from installed distribution metadata (importlib.metadata), which imports nothing: this
works without the `load` extra and costs milliseconds. Only `probe_torch=True` imports torch, to ask
it which CUDA it was built with and which GPUs it can use.
"""

from __future__ import annotations

import contextlib
import platform
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version

from qcli import __version__
from qcli.extras import missing
from qcli.results.run import Environment, EnvReport, GPUInfo

# Distribution names, in the order a bug report lists them.
PACKAGES: tuple[str, ...] = (
    "torch", "transformers", "accelerate", "bitsandbytes", "huggingface_hub", "safetensors",
    "tokenizers", "typer", "rich", "pydantic",
)  # fmt: skip
NVIDIA_SMI_TIMEOUT_SECONDS = 5


def package_versions() -> dict[str, str | None]:
    """Return each package's installed version, None when it is not installed."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _torch_gpus() -> tuple[str | None, bool, list[GPUInfo]]:
    import torch

    gpus = []
    available = torch.cuda.is_available()
    for i in range(torch.cuda.device_count() if available else 0):
        props = torch.cuda.get_device_properties(i)
        gpus.append(
            GPUInfo(
                device=f"cuda:{i}",
                name=props.name,
                memory_bytes=int(props.total_memory),
                compute_capability=f"{props.major}.{props.minor}",
            )
        )
    return torch.version.cuda, available, gpus


def _nvidia_smi_gpus() -> list[GPUInfo]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    query = "--query-gpu=index,name,memory.total,compute_cap"
    try:
        out = subprocess.run(
            [exe, query, "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_SECONDS, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3:
            continue
        memory = int(float(parts[2])) * 2**20 if parts[2].replace(".", "").isdigit() else None  # MiB
        cap = parts[3] if len(parts) > 3 and parts[3] not in {"", "[N/A]"} else None
        gpus.append(GPUInfo(device=f"cuda:{parts[0]}", name=parts[1], memory_bytes=memory, compute_capability=cap))
    return gpus


def environment(probe_torch: bool = True) -> Environment:
    """Return the environment; with `probe_torch` (and torch installed) torch's CUDA view, else nvidia-smi's."""
    env = Environment(
        python_version=platform.python_version(),
        platform=f"{platform.system()} {platform.machine()}",
        packages={"qcli": __version__, **package_versions()},
    )
    if probe_torch and not missing(("torch",)):
        with contextlib.suppress(Exception):  # a broken CUDA setup still gets a report
            env.torch_cuda_version, env.cuda_available, env.gpus = _torch_gpus()
            env.gpu_source = "torch"
            return env
    env.gpus = _nvidia_smi_gpus()
    env.gpu_source = "nvidia-smi" if shutil.which("nvidia-smi") else None
    return env


def env_report(probe_torch: bool = True) -> EnvReport:
    """Return the `qcli env` report."""
    return EnvReport(**environment(probe_torch).model_dump())
