"""Sweep every causal-LM model type the installed transformers knows and compare qcli with it.

    python -m sweep.run                 # all types -> docs/sweep.md and sweep/truth.json
    python -m sweep.run llama mamba     # a few types, table printed only

Each type runs in a worker process under a per-type time limit, so one type that hangs or crashes
cannot stop the sweep: the worker is killed and restarted for the types after it.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TRUTH_JSON = ROOT / "sweep" / "truth.json"
TABLE_MD = ROOT / "docs" / "sweep.md"
TYPE_TIMEOUT_S = 120


def all_types() -> list[str]:
    """Return every model type in transformers' causal-LM auto mapping, sorted."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from sweep.truth import VARIANTS

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) + sorted(VARIANTS)


def qcli_answer(cfg: dict[str, Any], batch: int, prompt: int, dtype: str) -> dict[str, Any]:
    """Return qcli's parameters, 4-bit quantized modules and cache bytes for a saved config.json."""
    from qcli.model.describe import from_config
    from qcli.plan.formats import NF4
    from qcli.plan.planner import kv_per_layer, quantized_tensors

    spec = from_config(cfg)
    quantized = sorted(name.removesuffix(".weight") for name in quantized_tensors(spec, NF4, None))
    numel = {t.name: t.numel for t in spec.tensors}
    return {
        "path": spec.source,
        "class": spec.model_class,
        "params": spec.params,
        "quantized_4bit": quantized,
        "quantized_4bit_params": sum(numel.get(f"{m}.weight", 0) for m in quantized),
        # after the prefill of `prompt` tokens (the peak), and after one decode step
        "prefill_bytes": sum(kv_per_layer(spec, prompt, batch, dtype, prefill=True)) or None,
        "decode_bytes": sum(kv_per_layer(spec, prompt + 1, batch, dtype)) or None,
    }


def _pct(got: int | None, want: int | None) -> str:
    if got is None or want is None:
        return f"{got} vs {want}"
    return f"{(got - want) / want:+.1%}" if want else f"{got} vs 0"


def compare(truth: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """Return one row of the table: which of params / quantized split / cache are exact, and why not."""
    notes: list[str] = []
    params_ok = answer["params"] == truth["params"]
    if not params_ok:
        notes.append(f"params {answer['params']:,} vs {truth['params']:,} ({_pct(answer['params'], truth['params'])})")
    want_q, got_q = set(truth["quantized_4bit"]), set(answer["quantized_4bit"])
    quant_ok = want_q == got_q and answer["quantized_4bit_params"] == truth["quantized_4bit_params"]
    if not quant_ok:
        extra, missing = sorted(got_q - want_q), sorted(want_q - got_q)
        part = f"quantized {answer['quantized_4bit_params']:,} vs {truth['quantized_4bit_params']:,}"
        if extra:
            part += f"; qcli also quantizes {', '.join(extra[:2])}{' …' if len(extra) > 2 else ''}"
        if missing:
            part += f"; qcli keeps {', '.join(missing[:2])}{' …' if len(missing) > 2 else ''}"
        notes.append(part)
    cache = truth.get("cache") or {}
    if cache.get("path") is None:
        cache_ok: bool | None = None
        notes.append(f"cache not measured: {cache.get('error', '')[:80]}")
    elif cache.get("type") is None:
        cache_ok = not answer["prefill_bytes"]
        if not cache_ok:
            notes.append("no cache, qcli plans one")
    else:
        decode_ok = cache["decode_bytes"] is None or answer["decode_bytes"] == cache["decode_bytes"]
        cache_ok = answer["prefill_bytes"] == cache["prefill_bytes"] and decode_ok
        if not cache_ok:
            kinds = "/".join(sorted(set(cache["layer_types"])))
            notes.append(
                f"cache prefill {_pct(answer['prefill_bytes'], cache['prefill_bytes'])}, "
                f"decode {_pct(answer['decode_bytes'], cache['decode_bytes'])} ({kinds})"
            )
    return {"params_ok": params_ok, "quant_ok": quant_ok, "cache_ok": cache_ok, "notes": "; ".join(notes)}


def _one(model_type: str, truth_only: bool = False) -> dict[str, Any]:
    from sweep.truth import truth

    t0 = time.perf_counter()
    try:
        result = truth(model_type)
    except Exception as exc:
        return {"model_type": model_type, "status": "transformers cannot build", "error": f"{exc!r:.300}"}
    result["status"] = "ok"
    result["truth_seconds"] = round(time.perf_counter() - t0, 2)
    if truth_only:
        return result
    t1 = time.perf_counter()
    try:
        answer = qcli_answer(result["config"], result["cache_batch"], result["cache_prompt"], result["cache_dtype"])
    except Exception as exc:
        result["status"] = "qcli error"
        result["error"] = f"{type(exc).__name__}: {exc}"[:300]
        return result
    result["qcli_seconds"] = round(time.perf_counter() - t1, 2)
    result["answer"] = answer
    result["row"] = compare(result, answer)
    return result


def _alarm(signum: int, frame: Any) -> None:
    raise TimeoutError("time limit")


def worker(timeout_s: int) -> None:
    """Read model types on stdin, write one JSON result per line on stdout."""
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    signal.signal(signal.SIGALRM, _alarm)
    out = sys.stdout
    sys.stdout = sys.stderr  # library prints must not corrupt the JSON lines
    import bitsandbytes  # noqa: F401  (imported before the first type: its time is not the type's)
    import transformers  # noqa: F401

    out.write("READY\n")
    out.flush()
    for line in sys.stdin:
        model_type = line.strip()
        if not model_type:
            continue
        signal.alarm(timeout_s)
        try:
            result = _one(model_type)
        except TimeoutError:
            result = {"model_type": model_type, "status": "timeout", "error": f"over {timeout_s} s"}
        finally:
            signal.alarm(0)
        out.write(json.dumps(result) + "\n")
        out.flush()


def sweep(types: list[str], timeout_s: int = TYPE_TIMEOUT_S) -> list[dict[str, Any]]:
    """Return one result per type, computed in a restartable worker process."""
    results: list[dict[str, Any]] = []
    todo = list(types)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    while todo:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sweep.run", "--worker", "--timeout", str(timeout_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
            env=env,
        )
        assert proc.stdin and proc.stdout
        ready, _, _ = select.select([proc.stdout], [], [], 900)  # imports on a busy machine take minutes
        if not ready or proc.stdout.readline().strip() != "READY":
            proc.kill()
            raise SystemExit("the sweep worker did not start")
        while todo:
            model_type = todo[0]
            start = time.perf_counter()
            proc.stdin.write(model_type + "\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], timeout_s + 60)
            line = proc.stdout.readline() if ready else ""
            todo.pop(0)
            if not line:
                proc.kill()
                proc.wait()
                results.append({"model_type": model_type, "status": "worker died", "error": "killed or crashed"})
                break
            result = json.loads(line)
            result["seconds"] = round(time.perf_counter() - start, 2)
            results.append(result)
            row = result.get("row") or {}
            print(
                f"{model_type:28} {result['status']:12} {result['seconds']:6.1f}s {row.get('notes', '')[:90]}",
                file=sys.stderr,
                flush=True,
            )
        else:
            proc.stdin.close()
            proc.wait()
    return results


def _mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def table(results: list[dict[str, Any]], title: str) -> str:
    """Return docs/sweep.md: the counts, then one row per type."""
    import transformers

    built = [r for r in results if r.get("row")]
    measured = [r for r in built if r["row"]["cache_ok"] is not None]
    with_cache = [r for r in measured if (r.get("cache") or {}).get("type")]
    lines = [
        f"# {title}",
        "",
        "Generated by `make sweep` (`python -m sweep.run`): every model type in transformers'",
        "`MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`, its default config shrunk to a few layers (sweep/truth.py),",
        "built as `AutoModelForCausalLM` on the meta device with weights tied. Truth: unique parameters;",
        "the modules transformers' own bitsandbytes quantizer turns into Linear4bit; the storage bytes of the",
        "model's own cache object after a prefill of batch 2 × 24 tokens and after one decode step (bfloat16,",
        "sliding windows shrunk to 8 tokens). `qcli s`: qcli's answer for the type in a warm process (torch",
        "already imported, no spec cache); `truth s`: transformers' own build, both quantizers and the cache runs.",
        "",
        f"transformers {transformers.__version__}: {len(results)} causal-LM types, {len(built)} built and compared.",
        "",
        f"- parameters exact: {sum(r['row']['params_ok'] for r in built)}/{len(built)}",
        f"- 4-bit quantized split exact: {sum(r['row']['quant_ok'] for r in built)}/{len(built)}",
        f"- cache exact (prefill and decode): {sum(bool(r['row']['cache_ok']) for r in measured)}/{len(measured)}"
        f" types whose cache transformers could run ({len(with_cache)} keep one, {len(measured) - len(with_cache)}"
        " none); the others are marked n/a",
        f"- analytic path: {sum(r['answer']['path'] == 'analytic' for r in built)} types, "
        f"meta path: {sum(r['answer']['path'] == 'meta' for r in built)}",
        "",
        "| type | class | path | params exact | quantized split exact | cache exact | qcli s | truth s | discrepancy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        row = r.get("row")
        if row is None:
            lines.append(
                f"| {r['model_type']} | {r.get('class', '')} | – | – | – | – | | {r.get('truth_seconds', '')} "
                f"| {r['status']}: {(str(r.get('error', '')).replace('|', '/').splitlines() or [''])[0][:120]} |"
            )
            continue
        lines.append(
            f"| {r['model_type']} | {r['class']} | {r['answer']['path']} | {_mark(row['params_ok'])} "
            f"| {_mark(row['quant_ok'])} | {_mark(row['cache_ok'])} | {r.get('qcli_seconds', '')} "
            f"| {r.get('truth_seconds', '')} "
            f"| {row['notes'].replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"


TRUTH_KEYS = ("class", "config", "params", "quantized_4bit", "quantized_4bit_params", "cache_batch", "cache_prompt",
              "cache_dtype", "cache", "truth_seconds")  # fmt: skip


def save_truth(results: list[dict[str, Any]]) -> None:
    """Write the truth of every type to sweep/truth.json (the sample test and --reuse-truth read it)."""
    import transformers

    types = {}
    for r in results:
        if "params" in r:
            types[r["model_type"]] = {k: r[k] for k in TRUTH_KEYS if k in r}
        else:
            types[r["model_type"]] = {"status": r["status"], "error": r.get("error", "")}
    data = {"transformers": transformers.__version__, "types": types}
    TRUTH_JSON.write_text(json.dumps(data, indent=None, sort_keys=True, separators=(",", ":")) + "\n")


def reuse_truth(timeout_s: int) -> list[dict[str, Any]]:
    """Return the rows for every type in sweep/truth.json, recomputing qcli's side only (in this process)."""
    import transformers

    data = json.loads(TRUTH_JSON.read_text())
    if data["transformers"] != transformers.__version__:
        raise SystemExit(f"sweep/truth.json is for transformers {data['transformers']}: run the full sweep")
    signal.signal(signal.SIGALRM, _alarm)
    results = []
    for model_type, t in data["types"].items():
        result = {"model_type": model_type, **t}
        if "params" not in t:
            results.append(result)
            continue
        result["status"] = "ok"
        start = time.perf_counter()
        signal.alarm(timeout_s)
        try:
            answer = qcli_answer(t["config"], t["cache_batch"], t["cache_prompt"], t["cache_dtype"])
            result["answer"], result["row"] = answer, compare(t, answer)
        except Exception as exc:
            result["status"], result["error"] = "qcli error", f"{type(exc).__name__}: {exc}"[:300]
        finally:
            signal.alarm(0)
        result["qcli_seconds"] = round(time.perf_counter() - start, 2)
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("types", nargs="*", help="model types (default: all causal-LM types)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=int, default=TYPE_TIMEOUT_S, help="seconds per type")
    parser.add_argument("--title", default="Sweep: qcli against transformers, every causal-LM type")
    parser.add_argument("--reuse-truth", action="store_true", help="recompute qcli's side only, from truth.json")
    parser.add_argument("--update", action="store_true", help="rebuild the truth of the given types in truth.json")
    args = parser.parse_args()
    if args.worker:
        worker(args.timeout)
        return
    if args.reuse_truth:
        results = reuse_truth(args.timeout)
        TABLE_MD.write_text(table(results, args.title))
        print(table(results, args.title).split("| type |")[0])
        return
    types = args.types or all_types()
    results = sweep(types, args.timeout)
    if args.update:  # merge these types' truth into truth.json, then rewrite the table from it
        old = json.loads(TRUTH_JSON.read_text())["types"]
        fresh = {r["model_type"] for r in results}
        save_truth([*({"model_type": k, **v} for k, v in old.items() if k not in fresh), *results])
        results = reuse_truth(args.timeout)
        TABLE_MD.write_text(table(results, args.title))
        print(table(results, args.title).split("| type |")[0])
        return
    text = table(results, args.title)
    if args.types:
        print(text)
        return
    TABLE_MD.write_text(text)
    save_truth(results)
    print(text.split("| type |")[0])


if __name__ == "__main__":
    main()
