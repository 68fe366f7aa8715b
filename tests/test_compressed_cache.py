"""Compressing cache layers (DeepSeek-V4's CSA/HCA): the counting rule, the meta probe that fits it, and
qcli's planned bytes against transformers' own cache after real forwards of a tiny CPU model."""

from __future__ import annotations

from typing import Any

import pytest

from qcli.model.cache_probe import solve
from qcli.model.spec import CacheCounts, CacheLayer, ModelSpec

# A DeepSeek-V4 small enough to run on a CPU: both layer kinds, windows of 4 (CSA) and 8 (HCA) tokens
# and a 6-token sliding window, so a few tokens cross every boundary.
TINY_V4: dict[str, Any] = {
    "model_type": "deepseek_v4",
    "architectures": ["DeepseekV4ForCausalLM"],
    "vocab_size": 128,
    "hidden_size": 64,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "head_dim": 32,
    "qk_rope_head_dim": 8,
    "q_lora_rank": 32,
    "o_lora_rank": 32,
    "o_groups": 2,
    "n_routed_experts": 4,
    "num_experts_per_tok": 2,
    "index_n_heads": 2,
    "index_head_dim": 16,
    "index_topk": 4,
    "hc_mult": 2,
    "hc_sinkhorn_iters": 2,
    "sliding_window": 6,
    "compress_rates": {"compressed_sparse_attention": 4, "heavily_compressed_attention": 8},
    "layer_types": ["heavily_compressed_attention", "compressed_sparse_attention"] * 2,
    "mlp_layer_types": ["hash_moe", "moe", "moe", "moe"],
}
BATCH = 2


def test_a_prefill_leaves_the_whole_prompt_in_the_window_and_the_buffer():
    layer = CacheLayer("sliding+compressed", window=6, compress_rate=4)
    assert layer.counts(3, prefill=True) == CacheCounts(tokens=3, entries=0, pending=3, carried=0)
    assert layer.counts(10, prefill=True) == CacheCounts(tokens=10, entries=2, pending=10, carried=1)


@pytest.mark.parametrize(
    ("tokens", "counts"),
    [
        (2, (2, 0, 2, 0)),  # nothing closed yet: the buffer is the first token plus the new one
        (4, (4, 1, 4, 1)),  # the step that closes the first window still holds its 4 tokens
        (5, (5, 1, 1, 1)),  # after a closed window, only the new token
        (7, (6, 1, 3, 1)),  # the sliding window caps the per-token part
        (12, (6, 3, 4, 1)),
    ],
)
def test_decoding_keeps_the_window_the_entries_and_the_open_buffer(tokens, counts):
    layer = CacheLayer("sliding+compressed", window=6, compress_rate=4)
    assert layer.counts(tokens, prefill=False) == CacheCounts(*counts)


def test_plain_layers_count_tokens_only():
    assert CacheLayer("sliding", window=6).counts(10, prefill=False) == CacheCounts(6, 0, 0, 0)
    assert CacheLayer("full").counts(10, prefill=False) == CacheCounts(10, 0, 0, 0)
    assert CacheLayer("sliding+compressed", compress_rate=4).counts(0, prefill=False) == CacheCounts(0, 0, 0, 0)


def test_solve_needs_enough_rows_and_a_fit():
    assert solve([(1, 0), (0, 1), (1, 1)], [2, 3, 5]) == [2, 3]
    with pytest.raises(ValueError, match="do not determine"):
        solve([(1, 1), (2, 2)], [2, 4])
    with pytest.raises(ValueError, match="does not follow"):
        solve([(1, 0), (0, 1), (1, 1)], [2, 3, 6])


@pytest.fixture(scope="module")
def tiny_spec() -> ModelSpec:
    from qcli.model.meta import from_meta

    return from_meta(TINY_V4)


def test_the_probe_fits_each_layer_kind(tiny_spec):
    # HCA: K=V window of head_dim, one head_dim entry per 8 tokens, kv + gate buffered per token.
    # CSA: entries of head_dim (compressor) + index_head_dim (indexer); the buffers and the carried last
    # window hold both series (2·head_dim, 2·index_head_dim); the carried gates stay float32.
    hca = CacheLayer(
        "sliding+compressed", per_token=((32, None),), window=6, compress_rate=8,
        per_entry=((32, None),), pending=((2 * 32, None),),
    )  # fmt: skip
    csa = CacheLayer(
        "sliding+compressed", per_token=((32, None),), window=6, compress_rate=4,
        per_entry=((32 + 16, None),), pending=((2 * 2 * (32 + 16), None),),
        carried=((4 * (32 + 16), None), (4 * (32 + 16), "float32")),
    )  # fmt: skip
    assert tiny_spec.cache == [hca, csa, hca, csa]
    assert not tiny_spec.notes


def test_spec_cache_round_trips_compressing_layers(tiny_spec):
    from qcli.model.meta import spec_from_json, spec_to_json

    assert spec_from_json(spec_to_json(tiny_spec)).cache == tiny_spec.cache


@pytest.mark.parametrize(("prompt", "steps"), [(3, 14), (8, 5)])
def test_planned_bytes_equal_transformers_cache_after_each_step(tiny_spec, prompt, steps):
    torch = pytest.importorskip("torch")
    from transformers import AutoConfig, AutoModelForCausalLM

    from qcli.plan.planner import kv_per_layer
    from sweep.truth import cache_bytes

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**TINY_V4), dtype=torch.bfloat16).eval()
    with torch.no_grad():
        cache = model(input_ids=torch.randint(0, 128, (BATCH, prompt)), use_cache=True).cache
        assert cache_bytes(cache)[1] == kv_per_layer(tiny_spec, prompt, BATCH, "bfloat16", prefill=True)
        for tokens in range(prompt + 1, prompt + steps + 1):
            cache = model(input_ids=torch.randint(0, 128, (BATCH, 1)), cache=cache, use_cache=True).cache
            assert cache_bytes(cache)[1] == kv_per_layer(tiny_spec, tokens, BATCH, "bfloat16"), tokens
