"""Rich views of the result objects. Nothing is computed here but unit conversions and labels; every
string a user or a model supplied (paths, preset names, prompts, generated text) is escaped."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qcli.errors import QcliError
from qcli.output.labels import GROUP_LABELS, STRATEGY_LABELS, component_label, format_label
from qcli.results.plan import (
    Component,
    CudaPrediction,
    DeviceFit,
    EstimateReport,
    ModelInfo,
    Option,
    Plan,
    PresetInfo,
    PresetsReport,
)
from qcli.units import decimal_bytes, human_bytes, human_params, signed_percent

if TYPE_CHECKING:  # annotations only: estimate does not define the models of load, verify, compare and env
    from qcli.results.run import CompareReport, Environment, LoadReport, QuantGroup, VerifyReport

PIPE_WIDTH = 120
MIN_WIDTH = 40  # narrower, a table's numbers would have to wrap


def console(stderr: bool = False) -> Console:
    """Return the console the views print to (120 columns when not a terminal)."""
    stream = sys.stderr if stderr else _stdout()
    # A pipe or a file gets 120 columns (logs read better unwrapped) unless COLUMNS says otherwise; a
    # COLUMNS that is not a width (0, -5, "abc") is ignored, and no layout goes below MIN_WIDTH.
    columns = os.environ.get("COLUMNS", "").strip()
    given = int(columns) if columns.isascii() and columns.isdigit() and int(columns) > 0 else None
    width = given or (None if stream.isatty() else PIPE_WIDTH)
    out = Console(stderr=stderr, highlight=False, soft_wrap=False, width=width, emoji=False)  # "a:smile:b" is a name
    if out.width < MIN_WIDTH:
        out.width = MIN_WIDTH
    return out


def _stdout() -> TextIO:
    """Return sys.stdout, or raise when it is closed (`qcli … >&-` leaves Python's sys.stdout None)."""
    if sys.stdout is None:
        raise QcliError(
            "stdout is closed: there is nowhere to print the result", "redirect it to a file or /dev/null instead"
        )
    return sys.stdout


def print_json(obj: BaseModel) -> None:
    """Print a pydantic result as one JSON object on stdout, nothing else."""
    out = _stdout()
    out.write(obj.model_dump_json(indent=2) + "\n")
    out.flush()


WEIGHT_KINDS = frozenset(
    {"weights", "quant_packed_weights", "quant_absmax", "quant_nested_absmax", "quant_nested_code", "quant_code",
     "int8_weights", "int8_row_scales"}
)  # fmt: skip
# Below this width the exact-bytes column is dropped (the JSON keeps every byte); numbers never wrap.
EXACT_BYTES_MIN_WIDTH = 100


def _size_table(title: str | None, out: Console) -> Table:
    table = Table(title=title, title_justify="left", box=box.HORIZONTALS, pad_edge=False, show_edge=False)
    table.add_column("component", overflow="fold", ratio=1)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("GB (10^9)", justify="right", no_wrap=True)
    if out.width >= EXACT_BYTES_MIN_WIDTH:
        table.add_column("bytes", justify="right", no_wrap=True)
    return table


def _size_row(table: Table, label: str, n_bytes: int, bold: bool = False) -> None:
    cells = [human_bytes(n_bytes), decimal_bytes(n_bytes), f"{n_bytes:,}"][: len(table.columns) - 1]
    if bold:
        label, cells = f"[bold]{label}[/bold]", [f"[bold]{c}[/bold]" for c in cells]
    table.add_row(label, *cells)


def _component_row(table: Table, c: Component) -> None:
    _size_row(table, escape(component_label(c) + (" [on CPU]" if c.device == "cpu" else "")), c.size_bytes)


def components_table(plan: Plan, out: Console, title: str | None = None) -> Table:
    """Return the memory table of one plan: weights and their subtotal, then the rest, then overheads."""
    table = _size_table(title, out)
    weights = [c for c in plan.components if c.kind in WEIGHT_KINDS]
    rest = [c for c in plan.components if c.kind not in WEIGHT_KINDS]
    for c in weights:
        _component_row(table, c)
    weights_label = "weights on each GPU" if plan.per_gpu else f"weights ({plan.bits_per_param:.3f} bits/param)"
    if rest:
        _size_row(table, weights_label, sum(c.size_bytes for c in weights), bold=True)
        table.add_section()
    for c in rest:
        _component_row(table, c)
    table.add_section()
    label = "total (tensors)" if rest else weights_label
    if plan.per_gpu:
        label = "total on each GPU (tensors)"
    _size_row(table, label, plan.total_bytes, bold=True)
    if plan.devices:
        for c in plan.overheads:
            _size_row(table, escape(component_label(c)), c.size_bytes)
        _size_row(table, "required (total + overheads)", plan.required_bytes, bold=True)
    return table


def _fits_cell(d: DeviceFit) -> str:
    if d.role == "offload":
        return "[red]no[/red]"  # the row's name says it: what the GPUs could not hold
    if d.fits is None:
        return "unknown (give --cpu-memory)"
    return "[green]yes[/green]" if d.fits else "[red]no[/red]"


def _short_blocks(blocks: list[str]) -> list[str]:
    """Return block names without the prefix they share with every block ("model.layers.5" -> "layers.5")."""
    if not blocks or any("." not in b for b in blocks):
        return blocks
    prefix = blocks[0].split(".")[0] + "."
    return [b.removeprefix(prefix) for b in blocks] if all(b.startswith(prefix) for b in blocks) else blocks


def _free_cell(headroom: int | None) -> str:
    """Return the room left on a device, or what it is short of (the JSON's negative headroom_bytes)."""
    if headroom is None:
        return "—"
    return human_bytes(headroom) if headroom >= 0 else f"short {human_bytes(-headroom)}"


def devices_table(plan: Plan) -> Table:
    """Return the fit table: one row per device (every row must fit)."""
    table = Table(box=box.HORIZONTALS, pad_edge=False, show_edge=False)
    table.add_column("device", overflow="fold")
    for col in ("capacity", "required", "free"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("fits", no_wrap=True)
    table.add_column("holds", overflow="fold")
    for d in plan.devices:
        name = escape(d.name) + (f" ×{d.identical_gpus} (each)" if d.identical_gpus > 1 else "")
        table.add_row(
            name,
            "—" if d.capacity_bytes is None else human_bytes(d.capacity_bytes),
            human_bytes(d.required_bytes),
            _free_cell(d.headroom_bytes),
            _fits_cell(d),
            escape(" to ".join(_short_blocks(d.blocks))) or "—",
        )
    return table


def verdict_line(plan: Plan) -> str:
    """Return the one verdict, worded from the device rows."""
    if plan.verdict == "fits":
        return "[green]fits[/green]"
    bad = [r for r in plan.devices if r.fits is False and r.role != "offload"]
    text = "[red]does not fit[/red]"
    if plan.verdict == "offload":
        text += f" on the GPUs: {human_bytes(plan.offloaded_bytes or 0)} would be offloaded to CPU (slow)"
    elif bad:
        text += ": " + ", ".join(f"{escape(r.name)} needs {human_bytes(r.required_bytes)}" for r in bad)
    return text


def _plan_name(p: Plan) -> str:
    return p.preset or format_label(p.format)


def model_title(m: ModelInfo) -> str:
    """Return the name a person calls the model: a hub id, a directory, or a config file's folder."""
    if not m.name:
        return f"{human_params(m.total_params)} parameters"
    path = Path(m.name)
    if path.suffix == ".json":
        return path.parent.name if path.stem == "config" and path.parent.name else path.stem
    return m.name.rstrip("/") or m.name  # a directory or a hub id, as the user wrote it


def _gpu_names(plan: Plan) -> list[str]:
    """Return one name per GPU of the plan (a training row stands for identical_gpus of them)."""
    return [d.name.split(" #")[0] for d in plan.devices if d.kind == "gpu" for _ in range(d.identical_gpus)]


def _devices_phrase(plan: Plan) -> str:
    names = _gpu_names(plan)
    names = [f"{n} GPU" if n[:1].isdigit() else n for n in names]  # a bare size: "a 24GB GPU"
    if len(set(names)) == 1:
        return f"one {names[0]}" if len(names) == 1 else f"{len(names)} × {names[0]}"
    return " + ".join(names)


def estimate_answer(report: EstimateReport) -> str:
    """Return the one-line answer an estimate starts with (rich markup, user strings escaped)."""
    m = report.model
    name = escape(model_title(m))
    if len(report.plans) != 1 and any(p.devices for p in report.plans):
        fit = [escape(_short_name(p)) for p in report.plans if p.fits]
        miss = [escape(_short_name(p)) for p in report.plans if not p.fits]
        where = _devices_phrase(report.plans[0])
        if not fit:
            return f"[bold]{name}[/bold] on {where}: [red]does not fit[/red] in any precision"
        tail = f"; not in {', '.join(miss)}" if miss else ""
        return f"[bold]{name}[/bold] on {where}: [green]fits[/green] in {', '.join(fit)}{tail}"
    if len(report.plans) != 1:
        lo = min(report.plans, key=lambda p: p.total_bytes)
        hi = max(report.plans, key=lambda p: p.total_bytes)
        what = "tensors" if any(p.kv_cache_bytes or p.training for p in report.plans) else "weights"
        return (
            f"[bold]{name}[/bold] needs {human_bytes(hi.total_bytes)} of {what} in {escape(_plan_name(hi))}, "
            f"down to {human_bytes(lo.total_bytes)} in {escape(_plan_name(lo))}"
        )
    plan = report.plans[0]
    verb = "need" if not m.name else "needs"
    head = f"[bold]{name}[/bold] in [bold]{escape(_plan_name(plan))}[/bold]"
    if not plan.devices:
        what = "of weights" if plan.total_bytes == plan.weight_bytes else "of tensors"
        return f"{head} {verb} {human_bytes(plan.total_bytes)} {what} ({decimal_bytes(plan.total_bytes)})"
    where = _devices_phrase(plan)
    gpus = [d for d in plan.devices if d.kind == "gpu"]
    need = human_bytes(max(d.required_bytes for d in gpus)) + (" per GPU" if len(_gpu_names(plan)) > 1 else "")
    if plan.fits:
        free = sum((d.headroom_bytes or 0) * d.identical_gpus for d in gpus)
        return f"{head} {verb} {need} on {where}: [green]fits[/green], {human_bytes(free)} free"
    short = f", {human_bytes(plan.offloaded_bytes)} would go to the CPU" if plan.offloaded_bytes else ""
    return f"{head} {verb} {need} on {where}: [red]does not fit[/red]{short}"


# Narrow names for the precision column (the glossary in the README explains "dq").
SHORT_FORMAT_LABELS = {"nf4+dq": "nf4 + dq", "fp4+dq": "fp4 + dq"}


def _short_name(p: Plan) -> str:
    return p.preset or SHORT_FORMAT_LABELS.get(p.format, p.format)


def comparison_table(report: EstimateReport, out: Console) -> Table:
    """Return one row per precision: bits/param, weights, total (and the fit when GPUs were given)."""
    table = Table(box=box.HORIZONTALS, pad_edge=False, show_edge=False)
    table.add_column("precision", no_wrap=True)
    table.add_column("bits/param", justify="right", no_wrap=True)
    table.add_column("weights", justify="right", no_wrap=True)
    table.add_column("GB (10^9)", justify="right", no_wrap=True)
    extra = any(p.total_bytes != p.weight_bytes for p in report.plans)
    if extra:
        table.add_column("total", justify="right", no_wrap=True)
    with_fit = any(p.devices for p in report.plans)
    if with_fit:
        table.add_column("required", justify="right", no_wrap=True)
        table.add_column("fits", no_wrap=True)
    for p in report.plans:
        row = [escape(_short_name(p)), f"{p.bits_per_param:.3f}"]
        row += [human_bytes(p.weight_bytes), decimal_bytes(p.weight_bytes)]
        if extra:
            row.append(human_bytes(p.total_bytes))
        if with_fit:
            row += [human_bytes(p.required_bytes), "[green]yes[/green]" if p.fits else "[red]no[/red]"]
        table.add_row(*row)
    return table


def cuda_prediction_line(p: CudaPrediction) -> str:
    """Return the one-line view of the predicted torch.cuda counters."""
    return (
        f"predicted torch.cuda after loading the weights on one GPU (fresh process; the CUDA context comes on top): "
        f"allocated {p.cuda_allocated_bytes:,} B ({human_bytes(p.cuda_allocated_bytes)}), reserved "
        f"{human_bytes(p.cuda_reserved_bytes)} (range {human_bytes(p.cuda_reserved_low_bytes)}–"
        f"{human_bytes(p.cuda_reserved_high_bytes)}), load peak {human_bytes(p.cuda_load_peak_bytes)}"
    )


COUNT_METHODS = {"analytic": "counted from the config", "meta": "counted on the meta device", "params": "given"}


def groups_heading(m: ModelInfo) -> str:
    """Return the line above the parameter groups: the count, the family and how it was counted."""
    kind = f"{escape(m.model_type)}, " if m.model_type else ""
    how = COUNT_METHODS[m.count_method] + (f" as {escape(m.model_class)}" if m.model_class else "")
    return f"{human_params(m.total_params)} parameters ({m.total_params:,}; {kind}{how})"


def groups_table(m: ModelInfo) -> Table:
    """Return the parameter groups of a model: what stays unquantized is visible here."""
    table = Table(box=box.HORIZONTALS, pad_edge=False, show_edge=False)
    table.add_column("parameter group", overflow="fold")
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("share", justify="right", no_wrap=True)
    for name, count in (m.params_by_group or {}).items():
        share = f"{count / m.total_params:.1%}" if m.total_params else "—"
        table.add_row(GROUP_LABELS.get(name, name), human_params(count), share)
    return table


def render_estimate(report: EstimateReport, out: Console) -> None:
    """Print the answer and the verdict first, then the memory table, the fit, the parameter groups, notes."""
    out.print(estimate_answer(report))
    rec = report.recommendation
    if rec:
        out.print(f"recommendation: [bold]{escape(rec.preset or 'none')}[/bold] — {escape(rec.reason)}")
    if len(report.plans) != 1:
        out.print()
        out.print(comparison_table(report, out))
    else:
        plan = report.plans[0]
        out.print()
        out.print(components_table(plan, out))
        if plan.cuda_prediction:
            out.print(cuda_prediction_line(plan.cuda_prediction))
        if plan.training:
            t = plan.training
            where = STRATEGY_LABELS.get(t.strategy, t.strategy)
            if t.total_gpus > 1:
                where += f" on {t.total_gpus} GPUs ({t.total_nodes} node{'s' if t.total_nodes > 1 else ''})"
            out.print(
                f"training: {t.mode}, {human_params(t.trainable_params)} trainable params, optimizer "
                f"{t.optimizer}, {where}; mixed precision {t.mixed_precision}"
                f"{', fp32 master weights' if t.master_weights else ''}; "
                f"gradient checkpointing {'on' if t.gradient_checkpointing else 'off'}"
            )
        if plan.devices:
            out.print()
            out.print(devices_table(plan))
            out.print(f"verdict: {verdict_line(plan)}")
            if plan.largest_layer:
                ll = plan.largest_layer
                out.print(
                    f"largest layer: {escape(ll.name)}, {human_bytes(ll.size_bytes)} — must fit whole on one GPU "
                    "(offloaded blocks are streamed through GPU 0)"
                )
            if plan.max_context_tokens is not None or plan.context_binding:
                out.print(_context_line(plan, report.batch_size))
            if plan.max_batch_size is not None:
                ctx = plan.training.sequence_tokens if plan.training else report.context_tokens
                out.print(f"max batch that fits: {plan.max_batch_size:,} at {ctx:,} tokens")
    if report.gpus_needed:
        table = Table(title="GPUs needed (--gpus auto)", title_justify="left", box=box.HORIZONTALS, show_edge=False)
        for col in ("strategy", "GPUs", "per GPU"):
            table.add_column(col, justify="left" if col == "strategy" else "right")
        for g in report.gpus_needed:
            table.add_row(
                escape(STRATEGY_LABELS.get(g.strategy, g.strategy)),
                "—" if g.total_gpus is None else str(g.total_gpus),
                "does not fit" if g.required_bytes is None else human_bytes(g.required_bytes),
            )
        out.print()
        out.print(table)
    if rec and rec.options:
        out.print()
        out.print(options_table(rec.options))
    for line in _checkpoint_lines(report):
        out.print(line)
    if report.model.params_by_group:
        out.print()
        out.print(groups_heading(report.model))
        out.print(groups_table(report.model))
    for n in rec.notes if rec else []:
        out.print(f"note: {escape(n)}")
    for n in report.notes:
        out.print(f"note: {escape(n)}")


def _checkpoint_lines(report: EstimateReport) -> list[str]:
    """Return the lines on the checkpoint itself: its commit, and the bytes it stores next to the plan's."""
    m, lines = report.model, []
    src = m.source
    if src is not None and src.repo_id:
        commit = f"commit {src.commit_sha[:12]}" if src.commit_sha else "commit unknown"
        lines.append(
            f"hub: {escape(src.repo_id)} @ {escape(src.revision or 'main')} = {commit} (config from {src.config_from})"
        )
    if m.stored_bytes is not None and m.stored_bytes_by_dtype is not None:
        by_dtype = ", ".join(f"{escape(k)} {v:,}" for k, v in sorted(m.stored_bytes_by_dtype.items()))
        by_dtype = by_dtype or "no tensors"
        line = f"stored: {m.stored_bytes:,} bytes ({human_bytes(m.stored_bytes)}) in safetensors: {by_dtype}"
        if len(report.plans) == 1:
            line += f"; planned weights: {report.plans[0].weight_bytes:,} bytes"
        lines.append(line)
    return lines


def _context_line(plan: Plan, batch: int) -> str:
    limit = plan.context_limit_tokens
    mem = "memory does not bind" if plan.max_context_tokens is None else f"{plan.max_context_tokens:,} tokens"
    line = f"max context the memory holds: {mem} (batch {batch})"
    if limit:
        line += f"; the model's own limit: {limit:,} tokens"
    if plan.context_binding:
        line += f" — the {'model limit' if plan.context_binding == 'model' else 'memory'} binds"
    return line


# The options view lists those that fit and a few that do not (the JSON holds all of them).
OPTIONS_SHOWN = 10


def options_table(options: list[Option]) -> Table:
    table = Table(
        title="options (those that fit, least memory per GPU first)",
        title_justify="left",
        box=box.HORIZONTALS,
        show_edge=False,
    )
    for col in ("preset", "train", "strategy", "per GPU", "fits", "why not"):
        table.add_column(col, justify="right" if col == "per GPU" else "left")
    shown = [o for o in options if o.fits]
    shown += [o for o in options if not o.fits][: max(3, OPTIONS_SHOWN - len(shown))]
    for o in shown:
        table.add_row(
            escape(o.preset),
            o.train or "—",
            escape(STRATEGY_LABELS.get(o.strategy or "", o.strategy or "—")),
            human_bytes(o.required_bytes),
            "[green]yes[/green]" if o.fits else "[red]no[/red]",
            escape(o.why_not or ""),
        )
    if len(shown) < len(options):
        table.caption = f"{len(options) - len(shown)} more that do not fit: --json lists every option"
        table.caption_justify = "left"
    return table


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


def quantization_table(report: LoadReport) -> Table | None:
    """Return the quantization read back from the loaded modules, one row per distinct setting; a column
    only where some group has a value (4-bit and int8 settings differ), so it reads at 80 columns."""
    groups = report.census.quantization
    if not groups:
        return None

    def cell(v: object) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        return "—" if v is None else escape(str(v))

    columns: list[tuple[str, Callable[[QuantGroup], object]]] = [
        # a few modules by name (a tied or offloaded lm_head), many by count
        ("modules", lambda g: ", ".join(g.modules) if len(g.modules) <= 2 else len(g.modules)),
        ("layer", lambda g: g.layer),
        ("quantized", lambda g: g.quantized),
        ("type", lambda g: g.quant_type),
        ("double quant", lambda g: g.double_quant),
        ("compute", lambda g: g.compute_dtype),
        ("block", lambda g: g.block_size),
        ("absmax", lambda g: g.absmax_dtype),
        ("threshold", lambda g: g.outlier_threshold),
        ("storage", lambda g: g.storage_dtype),
    ]
    shown = [(name, get) for name, get in columns if any(get(g) is not None for g in groups)]
    if all(g.quantized for g in groups):
        shown = [c for c in shown if c[0] != "quantized"]
    table = Table(
        title="quantization read from the loaded modules (--json lists every module)",
        title_justify="left",
        box=box.HORIZONTALS,
        show_edge=False,
    )
    for name, _ in shown:
        table.add_column(name, justify="right" if name in {"modules", "block", "threshold"} else "left")
    for g in groups:
        table.add_row(*[cell(get(g)) for _, get in shown])
    return table


def render_load(report: LoadReport, out: Console) -> None:
    if report.preset_overridden:
        out.print(
            f"[bold red]WARNING: the checkpoint's own quantization_config overrode preset "
            f"{escape(report.preset)}[/bold red]: what loaded is below, read from the modules"
        )
    table = Table(
        title=f"{escape(report.model)} · preset {escape(report.preset)} · {report.device} · "
        f"loaded in {report.load_seconds:.2f} s · measured {escape(report.measured_at)}",
        title_justify="left",
    )
    table.add_column("measure")
    table.add_column("bytes", justify="right")
    table.add_column("size (binary units)", justify="right")
    table.add_column("what it is")
    table.add_row(
        "memory_bytes",
        f"{report.memory_bytes:,}",
        human_bytes(report.memory_bytes),
        "every tensor once, wherever it is: params, buffers, quant_state, SCB",
    )
    for place, size in sorted(report.memory_bytes_by_device.items()):
        what = {"disk": "offloaded to disk by accelerate", "meta": "never loaded (meta device)"}.get(place, "")
        table.add_row(f"  on {escape(place)}", f"{size:,}", human_bytes(size), what)
    for kind, size in sorted(report.memory_bytes_by_kind.items()):
        table.add_row(f"  {kind}", f"{size:,}", human_bytes(size), "")
    if report.offloaded_bytes:
        table.add_row(
            "[yellow]offloaded_bytes[/yellow]",
            f"{report.offloaded_bytes:,}",
            human_bytes(report.offloaded_bytes),
            "off the load device (disk, or CPU for a GPU load)",
        )
    table.add_row(
        "footprint_bytes",
        f"{report.footprint_bytes:,}",
        human_bytes(report.footprint_bytes),
        "transformers get_memory_footprint() (misses 4-bit quant_state)",
    )
    if report.estimate_bytes is not None:
        error = report.estimate_error_percent
        table.add_row(
            "estimate_bytes",
            f"{report.estimate_bytes:,}",
            human_bytes(report.estimate_bytes),
            f"qcli estimate, {error:+.3f}% vs measured" if error is not None else "qcli estimate",
        )
    pred = report.cuda_prediction
    for c in report.cuda or []:
        table.add_section()
        table.add_row(
            f"{c.device} allocated", f"{c.allocated_bytes:,}", human_bytes(c.allocated_bytes), "torch allocator"
        )
        if pred is not None and c.device == report.device:
            table.add_row(
                "  predicted",
                f"{pred.cuda_allocated_bytes:,}",
                human_bytes(pred.cuda_allocated_bytes),
                f"qcli's allocator model, {c.allocated_bytes - pred.cuda_allocated_bytes:+,} B vs measured",
            )
        table.add_row(
            f"{c.device} reserved", f"{c.reserved_bytes:,}", human_bytes(c.reserved_bytes), "allocator segments"
        )
        if pred is not None and c.device == report.device:
            table.add_row(
                "  predicted",
                f"{pred.cuda_reserved_bytes:,}",
                human_bytes(pred.cuda_reserved_bytes),
                f"range {human_bytes(pred.cuda_reserved_low_bytes)}–{human_bytes(pred.cuda_reserved_high_bytes)}",
            )
        table.add_row(
            f"{c.device} peak allocated",
            f"{c.peak_allocated_bytes:,}",
            human_bytes(c.peak_allocated_bytes),
            "during the load",
        )
        table.add_row(f"{c.device} peak reserved", f"{c.peak_reserved_bytes:,}", human_bytes(c.peak_reserved_bytes), "")
        table.add_row(
            f"{c.device} CUDA context",
            f"{c.cuda_context_bytes:,}",
            human_bytes(c.cuda_context_bytes),
            "total − free − reserved (incl. other processes)",
        )
        table.add_row(
            f"{c.device} free / total",
            f"{c.free_bytes:,}",
            f"{human_bytes(c.free_bytes)} / {human_bytes(c.total_bytes)}",
            "",
        )
    if report.cuda is None:
        table.add_row("CUDA allocated / reserved", "—", "—", "absent: no CUDA device")
    if report.rss_bytes is not None:
        table.add_row("process RSS", f"{report.rss_bytes:,}", human_bytes(report.rss_bytes), "resident memory (CPU)")
    out.print(table)
    quant = quantization_table(report)
    if quant is not None:
        out.print(quant)
    c = report.census
    out.print(
        f"modules: {c.linear4bit} Linear4bit, {c.linear8bit} Linear8bitLt, {c.linear_unquantized} unquantized "
        f"Linear ({escape(', '.join(c.unquantized_modules[:4])) or 'none'}"
        f"{' …' if len(c.unquantized_modules) > 4 else ''})"
    )
    out.print(
        "unquantized tensors by dtype: "
        + ", ".join(f"{k} {human_params(v)}" for k, v in c.kept_params_by_dtype.items())
    )
    if report.generation:
        g = report.generation
        out.print(
            f"generation ({g.new_tokens} tokens, {g.generate_seconds:.2f} s): "
            f"[bold]{escape(g.prompt)}[/bold]{escape(g.text)}"
        )
    for n in report.notes:
        out.print(f"note: {escape(n)}")


CHECK_MARKS = {
    "passed": "[green]pass[/green]",
    "failed": "[red]FAIL[/red]",
    "warning": "[yellow]warn[/yellow]",
    "skipped": "[dim]skip[/dim]",
    "error": "[red]ERROR[/red]",
}


def render_verify(report: VerifyReport, out: Console) -> None:
    table = Table(
        title="qcli verify: " + ("[green]PASSED[/green]" if report.passed else "[red]FAILED[/red]"),
        title_justify="left",
    )
    table.add_column("check")
    table.add_column("result")
    table.add_column("s", justify="right")
    table.add_column("detail")
    for c in report.checks:
        seconds = "" if c.duration_seconds is None else f"{c.duration_seconds:.2f}"
        table.add_row(c.name, CHECK_MARKS[c.outcome], seconds, escape(c.detail))
    out.print(table)
    if report.load is not None and report.load.preset_overridden:
        out.print("[bold red]the checkpoint's own quantization_config overrode the preset[/bold red]")


def _f(value: float | None, spec: str, suffix: str = "") -> str:
    return "—" if value is None else format(value, spec) + suffix


def _spread(median: float | None, lo: float | None, hi: float | None, spec: str) -> str:
    """Return 'median (min–max)', or the median alone when the spread is unknown."""
    if median is None:
        return "—"
    if lo is None or hi is None:
        return format(median, spec)
    return f"{median:{spec}} ({lo:{spec}}–{hi:{spec}})"


def _one_line(text: str) -> str:
    """Return generated text on one line: newlines shown as ⏎, so a continuation cannot break the layout."""
    return text.replace("\r\n", "\n").replace("\n", "⏎").replace("\t", " ")


def _small_table() -> Table:
    return Table(box=box.HORIZONTALS, pad_edge=False, show_edge=False, title_justify="left")


def compare_tables(report: CompareReport) -> list[tuple[str, Table]]:
    """Return compare's three tables (memory, speed, quality), each narrow enough for 80 columns."""
    ok = [r for r in report.results if not r.error]
    memory = _small_table()
    for col in ("preset", "memory", "GB (10^9)", "saved", "vs estimate", "load"):
        memory.add_column(col, justify="left" if col == "preset" else "right", no_wrap=True)
    for r in report.results:
        if r.error:
            memory.add_row(escape(r.preset), "[red]failed[/red]", *["—"] * 4)  # the error follows the tables
            continue
        memory.add_row(
            escape(r.preset),
            "—" if r.memory_bytes is None else human_bytes(r.memory_bytes),
            "—" if r.memory_bytes is None else decimal_bytes(r.memory_bytes),
            _f(r.memory_saved_ratio, ".2f", "×"),
            signed_percent(r.estimate_error_percent),
            _f(r.load_seconds, ".2f", " s"),
        )
    speed = _small_table()
    speed.add_column("preset", no_wrap=True)
    speed.add_column("prefill (ms)", justify="right", no_wrap=True)
    speed.add_column("decode (tokens/s)", justify="right", no_wrap=True)
    for r in ok:
        ms = [
            None if v is None else v * 1000 for v in (r.prefill_seconds, r.prefill_min_seconds, r.prefill_max_seconds)
        ]
        speed.add_row(
            escape(r.preset),
            _spread(ms[0], ms[1], ms[2], ".1f"),
            _spread(r.tokens_per_second, r.min_tokens_per_second, r.max_tokens_per_second, ".0f"),
        )
    quality = _small_table()
    for col in ("preset", "perplexity", "Δ perplexity", "top-1 agreement", "KL"):
        quality.add_column(col, justify="left" if col == "preset" else "right", no_wrap=True)
    for r in ok:
        quality.add_row(
            escape(r.preset),
            _f(r.perplexity, ".3f"),
            _f(r.delta_perplexity, "+.3f"),
            _f(r.top1_agreement, ".1%"),
            _f(r.kl_divergence, ".4f"),
        )
    where = f"{escape(report.text)}, {report.scored_tokens or '?'} tokens"
    return [
        ("memory: every tensor of the loaded model", memory),
        (f"speed: {escape(report.speed_method or 'not measured')}", speed),
        (f"quality vs {escape(report.reference)} ({where}): lower perplexity and KL are better", quality),
    ]


def render_compare(report: CompareReport, out: Console) -> None:
    """Print the comparison: one line of context, then memory, speed and quality, then the generations."""
    failed = [r.preset for r in report.results if r.error]
    head = f"[bold]{escape(report.model)}[/bold] on {escape(report.device)}, {len(report.results)} presets"
    head += f" against {escape(report.reference)}"
    if failed:
        head += f"; [red]failed: {escape(', '.join(failed))}[/red]"
    out.print(head)
    for title, table in compare_tables(report):
        out.print()
        out.print(title)
        out.print(table)
    continuations = [r for r in report.results if r.continuation is not None]
    if continuations:
        out.print()
        out.print(f"greedy continuations of {escape(repr(report.prompt))}:")
        width = max(len(r.preset) for r in continuations)
        for r in continuations:
            out.print(f"  {escape(r.preset):<{width}}  {escape(_one_line(r.continuation or ''))}")
    for r in report.results:
        if r.traceback:
            out.print(f"--- {escape(r.preset)} worker traceback ---\n{escape(r.traceback)}")
    for r in report.results:
        if r.error:
            out.print(f"[red]{escape(r.preset)} failed[/red]: {escape(_one_line(r.error))}")
    for n in report.notes:
        out.print(f"note: {escape(n)}")
