"""The views of `qcli load`, `qcli verify` and `qcli compare`: what was loaded, read back from the modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qcli.output.console import print_line
from qcli.units import decimal_bytes, human_bytes, human_params, signed_percent

if TYPE_CHECKING:
    from qcli.results.run import CompareReport, LoadReport, QuantGroup, VerifyReport


QUANTIZATION_HEADING = "quantization read from the loaded modules (--json lists every module)"


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
    table = Table(box=box.HORIZONTALS, pad_edge=False, show_edge=False)
    for name, _ in shown:
        table.add_column(name, justify="right" if name in {"modules", "block", "threshold"} else "left")
    for g in groups:
        table.add_row(*[cell(get(g)) for _, get in shown])
    return table


# Below this width load's exact-bytes column is dropped, as estimate's is (the JSON keeps every byte).
LOAD_EXACT_BYTES_MIN_WIDTH = 100


def load_answer(report: LoadReport) -> str:
    """Return the one-line answer `qcli load` starts with: what the model takes, against the estimate."""
    head = (
        f"[bold]{escape(report.model)}[/bold] in [bold]{escape(report.preset)}[/bold] on {escape(report.device)}: "
        f"{human_bytes(report.memory_bytes)} of tensors ({decimal_bytes(report.memory_bytes)})"
    )
    if report.estimate_bytes is not None:
        head += f", estimate {human_bytes(report.estimate_bytes)}"
        if report.estimate_error_percent is not None:
            head += f" ({report.estimate_error_percent:+.3f}%)"
    return head + f"; loaded in {report.load_seconds:.2f} s"


def load_table(report: LoadReport, out: Console) -> Table:
    """Return load's memory table: what each figure is in its label, then its size in GiB-style and GB units
    (and exact bytes where there is room), so that it reads at 80 columns without cutting a word."""
    table = Table(box=box.HORIZONTALS, pad_edge=False, show_edge=False)
    table.add_column("measure", overflow="fold", ratio=1)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("GB (10^9)", justify="right", no_wrap=True)
    exact = out.width >= LOAD_EXACT_BYTES_MIN_WIDTH
    if exact:
        table.add_column("bytes", justify="right", no_wrap=True)

    def row(label: str, n_bytes: int | None) -> None:
        if n_bytes is None:
            cells = ["—", "—", "—"]
        else:
            cells = [human_bytes(n_bytes), decimal_bytes(n_bytes), f"{n_bytes:,}"]
        table.add_row(label, *cells[: 3 if exact else 2])

    row("memory_bytes: every tensor once, wherever it is (params, buffers, quant_state, SCB)", report.memory_bytes)
    for place, size in sorted(report.memory_bytes_by_device.items()):
        what = {"disk": " (offloaded to disk by accelerate)", "meta": " (never loaded: meta device)"}.get(place, "")
        row(f"  on {escape(place)}{what}", size)
    for kind, size in sorted(report.memory_bytes_by_kind.items()):
        row(f"  {escape(kind)}", size)
    if report.offloaded_bytes:
        row(
            "[yellow]offloaded_bytes[/yellow]: off the load device (disk, or CPU for a GPU load)",
            report.offloaded_bytes,
        )
    row("footprint_bytes: transformers get_memory_footprint(), which misses 4-bit quant_state", report.footprint_bytes)
    if report.estimate_bytes is not None:
        error = report.estimate_error_percent
        vs = f", {error:+.3f}% vs measured" if error is not None else ""
        row(f"estimate_bytes: qcli estimate{vs}", report.estimate_bytes)
    pred = report.cuda_prediction
    for c in report.cuda or []:
        table.add_section()
        mine = pred is not None and c.device == report.device
        row(f"{c.device} allocated (torch allocator)", c.allocated_bytes)
        if mine:
            gap = c.allocated_bytes - pred.cuda_allocated_bytes
            row(f"  predicted by qcli's allocator model ({gap:+,} B vs measured)", pred.cuda_allocated_bytes)
        row(f"{c.device} reserved (allocator segments)", c.reserved_bytes)
        if mine:
            low, high = human_bytes(pred.cuda_reserved_low_bytes), human_bytes(pred.cuda_reserved_high_bytes)
            row(f"  predicted by qcli (range {low}–{high})", pred.cuda_reserved_bytes)
        row(f"{c.device} peak allocated (during the load)", c.peak_allocated_bytes)
        row(f"{c.device} peak reserved", c.peak_reserved_bytes)
        row(f"{c.device} CUDA context (total − free − reserved, other processes included)", c.cuda_context_bytes)
        row(f"{c.device} free", c.free_bytes)
        row(f"{c.device} total", c.total_bytes)
    if report.cuda is None:
        row("CUDA allocated / reserved: absent (no CUDA device)", None)
    if report.rss_bytes is not None:
        row("process RSS (resident CPU memory of this process)", report.rss_bytes)
    return table


def render_load(report: LoadReport, out: Console) -> None:
    """Print the answer first, then the memory table, the quantization read back, the generation, notes."""
    if report.preset_overridden:
        print_line(
            out,
            f"[bold red]WARNING: the checkpoint's own quantization_config overrode preset "
            f"{escape(report.preset)}[/bold red]: what loaded is below, read from the modules",
        )
    print_line(out, load_answer(report))
    out.print()
    table = load_table(report, out)
    out.print(table)
    quant = quantization_table(report)
    if quant is not None:
        out.print()
        print_line(out, QUANTIZATION_HEADING)
        out.print(quant)
    c = report.census
    print_line(
        out,
        f"modules: {c.linear4bit} Linear4bit, {c.linear8bit} Linear8bitLt, {c.linear_unquantized} unquantized "
        f"Linear ({escape(', '.join(c.unquantized_modules[:4])) or 'none'}"
        f"{' …' if len(c.unquantized_modules) > 4 else ''})",
    )
    print_line(
        out,
        "unquantized tensors by dtype: "
        + ", ".join(f"{k} {human_params(v)} params" for k, v in c.kept_params_by_dtype.items()),
    )
    if report.generation:
        g = report.generation
        print_line(
            out,
            f"generation ({g.new_tokens} tokens, {g.generate_seconds:.2f} s): "
            f"[bold]{escape(g.prompt)}[/bold]{escape(g.text)}",
        )
    for n in report.notes:
        print_line(out, f"note: {escape(n)}")


CHECK_MARKS = {
    "passed": "[green]pass[/green]",
    "failed": "[red]FAIL[/red]",
    "warning": "[yellow]warn[/yellow]",
    "skipped": "[dim]skip[/dim]",
    "error": "[red]ERROR[/red]",
}


def verify_answer(report: VerifyReport) -> str:
    """Return verify's first line: the verdict, then how many checks had each outcome."""
    counts: dict[str, int] = {}
    for c in report.checks:
        counts[c.outcome] = counts.get(c.outcome, 0) + 1
    order = ("failed", "error", "warning", "passed", "skipped")
    tally = ", ".join(f"{counts[o]} {o}" for o in order if counts.get(o))
    verdict = "[green]PASSED[/green]" if report.passed else "[red]FAILED[/red]"
    return f"qcli verify: {verdict}" + (f" ({tally})" if tally else "")


def render_verify(report: VerifyReport, out: Console) -> None:
    """Print the verdict first, then one row per check (its seconds and what it found)."""
    print_line(out, verify_answer(report))
    table = Table(box=box.HORIZONTALS, pad_edge=False, show_edge=False)
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("seconds", justify="right", no_wrap=True)
    table.add_column("detail", overflow="fold", ratio=1)
    for c in report.checks:
        seconds = "" if c.duration_seconds is None else f"{c.duration_seconds:.2f}"
        table.add_row(c.name, CHECK_MARKS[c.outcome], seconds, escape(c.detail))
    out.print(table)
    if report.load is not None and report.load.preset_overridden:
        print_line(out, "[bold red]the checkpoint's own quantization_config overrode the preset[/bold red]")


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
    print_line(out, head)
    for title, table in compare_tables(report):
        out.print()
        print_line(out, title)
        out.print(table)
    continuations = [r for r in report.results if r.continuation is not None]
    if continuations:
        out.print()
        print_line(out, f"greedy continuations of {escape(repr(report.prompt))}:")
        width = max(len(r.preset) for r in continuations)
        for r in continuations:
            print_line(out, f"  {escape(r.preset):<{width}}  {escape(_one_line(r.continuation or ''))}")
    for r in report.results:
        if r.traceback:
            print_line(out, f"--- {escape(r.preset)} worker traceback ---\n{escape(r.traceback)}")
    for r in report.results:
        if r.error:
            print_line(out, f"[red]{escape(r.preset)} failed[/red]: {escape(_one_line(r.error))}")
    for n in report.notes:
        print_line(out, f"note: {escape(n)}")
