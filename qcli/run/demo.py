"""The reserved model name `demo`: a tiny Llama-architecture checkpoint built locally.

Deterministic (fixed seed), trained for a few seconds on the packaged sample text so that it
completes "The capital of France is" with " Paris", with a BPE tokenizer trained locally too.
Cached under the user's cache dir, so a newcomer runs load/verify/compare with no GPU or network.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from qcli.errors import UsageError
from qcli.model.demo import DEMO_CONFIG, DEMO_VERSION, DEMO_VOCAB
from qcli.resources import cache_root, data_text

# Not `.demo-*`: those are build folders, and one left by a killed build is removed under this lock.
LOCK_NAME = f"demo-v{DEMO_VERSION}.lock"
TRAIN_STEPS = 120
TRAIN_SEQ = 32  # "The capital of France is Paris" needs a short context; 32 halves the cost of 64
# progress(steps done, steps in all), called while the demo trains.
Progress = Callable[[int, int], None]


def demo_dir() -> Path:
    """Return where the demo checkpoint lives in the cache (versioned: a new recipe builds anew)."""
    return cache_root() / f"demo-v{DEMO_VERSION}"


def writable_cache() -> Path:
    """Return the cache dir, created; one that is a file or cannot be written is bad input."""
    root = cache_root()
    named = f"QCLI_CACHE={root}" if os.environ.get("QCLI_CACHE") else f"the cache dir {root} (QCLI_CACHE moves it)"
    if root.exists() and not root.is_dir():
        raise UsageError(f"{named} is not a directory", "point QCLI_CACHE at a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{named} cannot be created ({exc.strerror})", "point QCLI_CACHE elsewhere") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise UsageError(f"{named} is not writable", "point QCLI_CACHE elsewhere")
    return root


def demo_ready() -> bool:
    """Return whether the demo checkpoint is already built (it appears only complete: see ensure_demo)."""
    target = demo_dir()
    return (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file()


def ensure_demo(progress: Progress | None = None) -> Path:
    """Return the demo checkpoint directory, building it on first use (seconds of CPU on one core).

    Atomic: built in a temporary `.demo-*` folder next to the target and renamed into place, so a reader
    sees no checkpoint or a whole one. An exclusive lock (filelock; released when the process dies)
    serialises concurrent first runs (compare's workers, two shells): the second waits, then finds the
    checkpoint built. An interrupted build (Ctrl-C, SIGTERM: qcli raises Terminated in the main thread)
    leaves no temporary folder behind; one left by a SIGKILL is removed by the next build.
    """
    target = demo_dir()
    if demo_ready():
        return target
    root = writable_cache()
    with FileLock(str(root / LOCK_NAME)):
        if demo_ready():  # another process built it while this one waited
            return target
        for stale in root.glob(".demo-*"):  # left by a build that was killed: nobody holds the lock now
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=root))
        try:
            build_demo(tmp, progress)
            if target.exists():  # a leftover from a version without the lock: not whole, replace it
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _tokenizer(text: str) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=DEMO_VOCAB,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def build_demo(out: Path, progress: Progress | None = None) -> None:
    """Write the demo checkpoint (config, safetensors weights, tokenizer) into `out`.

    `progress(done, total)` is called after each training step.
    """
    import torch

    text = data_text("sample.txt")
    tokenizer = _tokenizer(text)
    threads = torch.get_num_threads()
    # One thread: the matrices are tiny (hidden 256), so more threads add synchronisation, not speed,
    # and on a busy machine OpenMP's spinning workers burn CPU time for nothing.
    torch.set_num_threads(1)
    try:
        _train_and_save(tokenizer, text, out, progress)
    finally:
        torch.set_num_threads(threads)


def _train_and_save(tokenizer: Any, text: str, out: Path, progress: Progress | None) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**{k: v for k, v in DEMO_CONFIG.items() if k not in {"architectures", "model_type", "dtype"}})
    model = LlamaForCausalLM(config)
    ids = torch.tensor(tokenizer(text)["input_ids"])
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for step in range(TRAIN_STEPS):
        starts = torch.randint(0, len(ids) - TRAIN_SEQ - 1, (16,), generator=gen)
        batch = torch.stack([ids[s : s + TRAIN_SEQ] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress is not None:
            progress(step + 1, TRAIN_STEPS)
    model.eval()
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # save_pretrained's "Writing model shards" bar is not ours to show
    try:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
