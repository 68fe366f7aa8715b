"""`qcli compare`: every preset in its own subprocess (clean memory figures), then agreement and KL
against the reference preset on the same token positions."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from qcli.environment import environment
from qcli.errors import RunError, UsageError, debug_enabled
from qcli.model.config_schema import validate_config
from qcli.model.demo import DEMO_NAME
from qcli.model.describe import from_config
from qcli.model.meta import UnknownModelType
from qcli.model.resolve import ModelSource, resolve
from qcli.options import FromCli
from qcli.plan.limits import MAX_TIMEOUT_SECONDS, check_float
from qcli.plan.presets import load_preset, preset_key
from qcli.resources import data_text
from qcli.results.run import CompareReport, CompareRow
from qcli.run.checkpoint import (
    check_causal_lm,
    check_generation_config,
    check_prequantized_state,
    check_token_ids,
    check_tokenizer_fits,
    check_weight_dtypes,
    load_tokenizer,
)
from qcli.run.demo import writable_cache
from qcli.run.flags import check_new_tokens, check_prompt, check_text_file, check_weights_present, resolve_device
from qcli.run.loader import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPT, model_path
from qcli.run.quality import agreement_and_kl
from qcli.run.worker import WorkerSpec, run_worker


@dataclass
class CompareOptions(FromCli):
    """Everything compare takes; the defaults here are the only ones (flags left unset are None)."""

    model: str
    presets: list[str] = field(default_factory=lambda: ["bf16", "int8", "nf4", "qlora"])
    reference: str | None = None
    device: str = "auto"
    text: str | None = None
    prompt: str = DEFAULT_PROMPT
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    timeout_seconds: float = 1800
    speed: bool = True
    revision: str | None = None
    token: str | None = field(default=None, repr=False)  # a hub token: given to the workers in HF_TOKEN
    inject_failure: dict[str, str] = field(default_factory=dict)  # tests: preset -> raise | crash | hang


Checked = tuple[list[str], str, str, ModelSource]  # what validate() returns


def validate(opts: CompareOptions) -> Checked:
    """Check everything before anything loads; return (presets, reference, text, the resolved model)."""
    presets = [p.strip() for p in opts.presets]
    if not any(presets):
        raise UsageError("--presets is empty", "e.g. --presets bf16,int8,nf4,qlora")
    if not all(presets):
        raise UsageError("--presets has an empty entry (two commas in a row, or one at an end)")
    for p in presets:
        load_preset(p)  # unknown names and invalid files: exit 2 now
    # One preset spelled two ways (bf16 and BF16, a name and its file) is one preset: compared by what it names.
    keys: dict[str, str] = {}
    for p in presets:
        if (first := keys.setdefault(preset_key(p), p)) != p or presets.count(p) > 1:
            same = f"{p!r} twice" if first == p else f"{first!r} and {p!r}, the same preset"
            raise UsageError(f"--presets lists {same}", "list each preset once")
    if opts.reference is not None:
        load_preset(opts.reference)
    # The reference as the list spells it when it is listed (--reference QLORA with qlora): no extra worker.
    reference = keys.get(preset_key(opts.reference), opts.reference) if opts.reference else presets[0]
    if reference not in presets:
        presets.insert(0, reference)
    check_float("--timeout", opts.timeout_seconds, 0, MAX_TIMEOUT_SECONDS, lo_open=True)
    check_prompt(opts.prompt)
    text = check_text_file(opts.text) if opts.text is not None else data_text("sample.txt")
    # A missing model is bad input before any preset runs; every worker then loads the same commit.
    source = resolve(opts.model, opts.revision, token=opts.token)
    check_weights_present(source)
    check_causal_lm(opts.model, source.config, trust_remote_code=False)
    validate_config(source.config)
    check_token_ids(opts.model, source.config)
    check_generation_config(opts.model, source.local_dir)
    check_weight_dtypes(opts.model, source, opts.token)
    check_prequantized_state(opts.model, source)
    try:
        spec = from_config(source.config)
    except UnknownModelType:
        raise
    except UsageError:
        spec = None
    check_new_tokens(opts.max_new_tokens, spec)
    resolve_device(opts.device)
    if opts.model == DEMO_NAME:
        writable_cache()  # each worker builds or reads the demo there
    else:  # every row scores text with it: a missing or damaged tokenizer is bad input before any worker runs
        revision = source.commit_sha or opts.revision
        tokenizer = load_tokenizer(model_path(source), opts.model, source.local_dir, revision, opts.token, False)
        check_tokenizer_fits(opts.model, tokenizer, source.config)
    return presets, reference, text, source


def run_compare(
    opts: CompareOptions, progress: Callable[[str], None] | None = None, checked: Checked | None = None
) -> CompareReport:
    """Return the comparison; a preset that fails gets its error in its row and the others still run.

    The reference runs first. Agreement and KL are measured for every row, the reference's own
    included (1.0 and 0 by measurement, a check of the method).
    """
    import torch

    presets, reference, text, source = checked or validate(opts)  # the CLI validates first, once
    revision = source.commit_sha or opts.revision  # every worker loads the commit this run resolved
    env = {"HF_TOKEN": opts.token} if opts.token else None  # never in the spec file
    run_order = [reference, *[p for p in presets if p != reference]]  # the reference first
    rows: dict[str, CompareRow] = {}
    logits: dict[str, object] = {}
    speed_method: str | None = None
    scored: int | None = None
    debug = debug_enabled()
    with tempfile.TemporaryDirectory(prefix="qcli-compare-") as tmp:
        for i, preset in enumerate(run_order, 1):
            if progress:
                progress(f"[{i}/{len(run_order)}] {preset}: load, perplexity, speed")
            spec = WorkerSpec(
                model=opts.model,
                revision=revision,
                preset=preset,
                device=opts.device,
                text=text,
                prompt=opts.prompt,
                max_new_tokens=opts.max_new_tokens,
                speed=opts.speed,
                work_dir=str(Path(tmp) / f"{i}-worker"),
                fail_for_test=opts.inject_failure.get(preset),
            )
            result = run_worker(spec, opts.timeout_seconds, debug=debug, extra_env=env)
            if preset == reference and result.bad_input:
                # The reference is loaded first: a checkpoint that does not match its config stops here, exit 2.
                raise UsageError(result.row.error or f"preset {preset}: bad input")
            rows[preset] = result.row
            speed_method = result.speed_method or speed_method
            if result.ok:
                logits[preset] = torch.load(spec.logits_path)
                scored = result.scored_tokens or scored
    ref = rows[reference]
    for preset, row in rows.items():
        if row.error or reference not in logits:
            continue
        try:
            row.top1_agreement, row.kl_divergence = agreement_and_kl(logits[reference], logits[preset])
        except RunError as exc:
            row.error = exc.line()
            continue
        if ref.memory_bytes and row.memory_bytes:
            row.memory_saved_ratio = round(ref.memory_bytes / row.memory_bytes, 4)
        if ref.perplexity is not None and row.perplexity is not None:
            row.delta_perplexity = row.perplexity - ref.perplexity
    loaded_on = next((r.device for r in rows.values() if r.device), None)  # read back by a worker that loaded
    report = CompareReport(
        model=opts.model,
        reference=reference,
        device=loaded_on or resolve_device(opts.device),
        text=opts.text or "built-in sample",
        prompt=opts.prompt,
        results=[rows[p] for p in presets],
        created_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        model_commit=source.commit_sha,  # the hub snapshot's commit (None for a local model)
        environment=environment(probe_torch=True),
    )
    report.speed_method, report.scored_tokens = speed_method, scored
    if loaded_on is None:
        report.notes.append(f"no preset loaded: {report.device} is where they were to load, not a device read back")
    if rows[reference].error:
        report.notes.append(f"the reference {reference} failed: no agreement or KL figures")
    return report
