"""The views of `qcli env` (and `--version`) and `qcli presets`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qcli.output.labels import format_label
from qcli.results.plan import (
    PresetInfo,
    PresetsReport,
)
from qcli.units import human_bytes

if TYPE_CHECKING:
    from qcli.results.run import Environment


def env_text(env: Environment) -> str:
    """Return the environment as aligned 'name  version' lines (plain text, for pasting)."""
    pk = env.packages
    rows: list[tuple[str, str]] = [("qcli", pk.get("qcli") or "?")]
    rows.append(("Python", f"{env.python_version} ({env.platform})"))
    for name, ver in pk.items():
        if name == "qcli":
            continue
        text = ver or "not installed"
        if name == "torch" and ver:
            if env.cuda_available is not None:
                cuda = f"CUDA {env.torch_cuda_version}" if env.torch_cuda_version else "CPU-only build"
                text += f" ({cuda}{', GPU available' if env.cuda_available else ', no GPU available'})"
            elif "+cpu" in ver:
                text += " (CPU-only build)"
        rows.append((name, text))
    if env.gpus:
        for g in env.gpus:
            mem = f", {human_bytes(g.memory_bytes)}" if g.memory_bytes else ""
            cap = f", compute capability {g.compute_capability}" if g.compute_capability else ""
            rows.append((g.device, f"{g.name}{mem}{cap}"))
    elif env.gpu_source:
        rows.append(("GPUs", f"none seen by {env.gpu_source}"))
    else:
        rows.append(("GPUs", "not probed (no nvidia-smi; `qcli env` asks torch)" if pk.get("torch") else "none seen"))
    if "torch" in pk and pk["torch"] is None:
        rows.append(("hint", "load, verify and compare need pip install 'qcli[load]'"))
    width = max(len(k) for k, _ in rows) + 2
    return "\n".join(f"{k:<{width}}{v}" for k, v in rows)


def render_env(env: Environment, out: Console) -> None:
    out.print(env_text(env), markup=False, highlight=False)


def render_presets(report: PresetsReport, out: Console) -> None:
    out.print("presets (configs/; a YAML file path works wherever a name does)")
    table = Table(box=box.HORIZONTALS, pad_edge=False, show_edge=False)
    for col in ("name", "weights", "dtype"):
        table.add_column(col, no_wrap=True)
    table.add_column("description", ratio=1)
    for p in report.presets:
        table.add_row(escape(p.name), format_label(p.format), p.dtype, escape(p.description))
    out.print(table)


def _py(value: object) -> str:
    if isinstance(value, str) and value in {"float32", "float16", "bfloat16", "uint8", "int8"}:
        return f"torch.{value}"
    return repr(value)


def render_preset_code(preset: PresetInfo, out: Console) -> None:
    """Print the preset as the Python that builds the same BitsAndBytesConfig."""
    lines = [f"# {preset.name} ({preset.source}): {preset.description}", f"dtype=torch.{preset.dtype}"]
    if preset.bitsandbytes_config is None:
        lines.append("quantization_config=None  # no quantization")
    else:
        args = ",\n".join(f"    {k}={_py(v)}" for k, v in preset.bitsandbytes_config.items())
        lines.append(f"quantization_config=BitsAndBytesConfig(\n{args},\n)")
    out.print("\n".join(lines), markup=False)
