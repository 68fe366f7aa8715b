"""The reserved model name `demo`: what the tiny built-in checkpoint is (its config), so that the
estimate can describe it without building it. qcli.run.demo builds and caches the weights."""

from __future__ import annotations

from typing import Any

DEMO_NAME = "demo"
DEMO_VERSION = 2  # 2: trained on 32-token windows (built in ~15 s of CPU instead of ~30)
DEMO_VOCAB = 512
# Every linear has >= 32768 elements, so double quantization saves bytes on each (it costs
# 1,092 bytes of per-tensor constants and saves 3 bytes per 64 weights).
DEMO_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": DEMO_VOCAB,
    "hidden_size": 256,
    "intermediate_size": 704,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "dtype": "float32",
}
DEMO_PROMPT = "The capital of France is"
DEMO_EXPECT = "Paris"
