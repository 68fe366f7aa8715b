"""The reserved model name `demo`: a tiny Llama-architecture checkpoint built locally.

Deterministic (fixed seed), trained for a few seconds on the packaged sample text so that it
completes "The capital of France is" with " Paris", with a BPE tokenizer trained locally too.
Cached under the user's cache dir, so a newcomer runs load/verify/compare with no GPU or network.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qcli.errors import UsageError
from qcli.model.demo import DEMO_CONFIG, DEMO_VERSION, DEMO_VOCAB
from qcli.resources import cache_root, data_text

TRAIN_STEPS = 120
TRAIN_SEQ = 64


def demo_dir() -> Path:
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


def _complete(target: Path) -> bool:
    return (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file()


@contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the cache while the demo is built: a second `qcli load demo` started
    meanwhile waits and then uses the finished build (fcntl.flock; released when the process dies)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: builds may race, each into its own temp dir
        yield
        return
    with open(root / f"demo-v{DEMO_VERSION}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_demo() -> Path:
    """Return the demo checkpoint directory, building it on first use (a few seconds on a CPU).

    Built into a temporary `.demo-*` directory and renamed into place, under a lock: an interrupted
    build (Ctrl-C, SIGTERM) leaves nothing behind and two racing builds never see a half-written one.
    """
    target = demo_dir()
    if _complete(target):
        return target
    root = writable_cache()
    with _build_lock(root):
        if _complete(target):  # another process built it while this one waited
            return target
        for stale in root.glob(".demo-*"):  # left by a build that was killed (SIGKILL): nobody holds it now
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=root))
        try:
            build_demo(tmp)
            if target.exists():
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


def build_demo(out: Path) -> None:
    """Write the demo checkpoint (config, safetensors weights, tokenizer) into `out`."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    text = data_text("sample.txt")
    tokenizer = _tokenizer(text)
    torch.manual_seed(0)
    config = LlamaConfig(**{k: v for k, v in DEMO_CONFIG.items() if k not in {"architectures", "model_type", "dtype"}})
    model = LlamaForCausalLM(config)
    ids = torch.tensor(tokenizer(text)["input_ids"])
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(TRAIN_STEPS):
        starts = torch.randint(0, len(ids) - TRAIN_SEQ - 1, (16,), generator=gen)
        batch = torch.stack([ids[s : s + TRAIN_SEQ] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
