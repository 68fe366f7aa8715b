"""qcli's pure-Python device map against the one transformers really computes (on a meta model, no
weights): the plan and the load must agree module by module."""

from __future__ import annotations

import pytest

from qcli.model.describe import from_config
from qcli.plan.formats import parse_format
from qcli.plan.placement import infer_device_map
from qcli.plan.planner import weight_layout

CONFIG = {
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 6,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "vocab_size": 5000,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def _real_map(budgets: dict, mode: str) -> dict[str, str]:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.integrations.accelerate import get_balanced_memory, infer_auto_device_map

    cfg = transformers.LlamaConfig(**{k: v for k, v in CONFIG.items() if k != "model_type"})
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    no_split = set(model._no_split_modules)
    if mode == "sequential":
        max_memory = dict(budgets)
    else:
        max_memory = get_balanced_memory(model, max_memory=dict(budgets), no_split_module_classes=no_split)
    dm = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split, clean_result=False)
    return {k: str(v) for k, v in dm.items()}


@pytest.mark.parametrize("mode", ["balanced", "sequential"])
@pytest.mark.parametrize("gpu_bytes", [(9_000_000, 9_000_000), (4_000_000, 6_000_000, 30_000_000), (3_000_000,)])
def test_device_map_matches_transformers(mode, gpu_bytes):
    budgets = {i: b for i, b in enumerate(gpu_bytes)} | {"cpu": 10**12}
    real = _real_map(budgets, mode)
    spec = from_config(CONFIG)
    layout = weight_layout(spec, parse_format("bf16"), "bfloat16", None)
    ours = infer_device_map(layout.blocks, list(gpu_bytes), mode, user_set=True, quantized=False)
    named = {b: ("cpu" if d == len(gpu_bytes) else str(d)) for b, d in ours.assignment.items()}
    # transformers names a parent (e.g. model.layers) when all of it goes to one device: expand it per block.
    real_blocks = {}
    for block in named:
        owner = next(k for k in real if block == k or block.startswith(k + "."))
        real_blocks[block] = real[owner]
    assert real_blocks == named
    assert len(set(named.values())) > 1 or len(gpu_bytes) == 1  # the cases really split the model
