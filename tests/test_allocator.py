"""The CUDA caching-allocator rules (qcli.plan.allocator) on known tensor lists, and the per-storage
expansion (qcli.plan.storages) against real bitsandbytes tensors on the CPU."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qcli.plan.allocator import (
    LARGE_BUFFER_BYTES,
    MIB,
    SMALL_BUFFER_BYTES,
    CachingAllocator,
    allocated_lower_bound,
    predict,
    reserved_lower_bound,
    round_size,
    segment_bytes,
    should_split,
    transient_headroom,
)
from qcli.plan.formats import BF16, FP4, FP16, FP32, INT8, NF4, NF4_DQ, Format, storage_bytes
from qcli.plan.storages import (
    load_order_key,
    model_storages,
    process_storages,
    transient_storages,
    warmup_bytes,
    weight_storages,
)
from qcli.run.cuda_probe import loaded_storages, replay

FP4_DQ = Format("fp4", "4bit", double_quant=True)
ALL_FORMATS = [FP32, FP16, BF16, INT8, NF4, FP4, NF4_DQ, FP4_DQ]


# --- allocator rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nbytes", "block"), [(0, 0), (1, 512), (4, 512), (511, 512), (512, 512), (513, 1024), (1024, 1024), (1025, 1536)]
)
def test_round_size_is_512_multiple_and_zero_allocates_nothing(nbytes, block):
    assert round_size(nbytes) == block


@pytest.mark.parametrize(
    ("block", "segment"),
    [
        (512, 2 * MIB),
        (MIB, 2 * MIB),  # kSmallSize is still small
        (MIB + 512, 20 * MIB),  # first large size: a kLargeBuffer segment
        (10 * MIB - 512, 20 * MIB),
        (10 * MIB, 10 * MIB),  # kMinLargeAlloc: own segment, already a 2 MiB multiple
        (10 * MIB + 512, 12 * MIB),
        (501 * MIB, 502 * MIB),
    ],
)
def test_segment_size_follows_get_allocation_size(block, segment):
    assert segment_bytes(block) == segment


def test_should_split_small_at_512_large_above_1mib():
    assert should_split(2 * MIB, 2 * MIB - 512, small=True)
    assert not should_split(1024, 1024, small=True)
    assert not should_split(12 * MIB, 11 * MIB, small=False)  # exactly 1 MiB left: not split
    assert should_split(12 * MIB, 11 * MIB - 512, small=False)


def test_zero_size_storages_count_nothing():
    p = predict([0, 0, 0])
    assert (p.allocated_bytes, p.reserved_bytes, p.small_segments + p.large_segments) == (0, 0, 0)


def test_small_blocks_pack_into_one_2mib_segment_until_full():
    full = predict([100] * 4096)  # 4096 blocks of 512 B = exactly 2 MiB
    assert (full.allocated_bytes, full.reserved_bytes, full.small_segments) == (2 * MIB, 2 * MIB, 1)
    over = predict([100] * 4097)
    assert (over.allocated_bytes, over.reserved_bytes, over.small_segments) == (2 * MIB + 512, 4 * MIB, 2)


def test_two_one_mib_blocks_fill_a_small_segment():
    p = predict([MIB, MIB, 1])
    assert (p.allocated_bytes, p.reserved_bytes, p.small_segments) == (2 * MIB + 512, 4 * MIB, 2)


def test_medium_requests_share_20mib_segments_best_fit():
    # 8 MiB + 8 MiB fit one 20 MiB segment (4 MiB left); the third needs a new one, the 4 MiB request
    # then takes the 4 MiB remainder of the first (best fit) rather than the second's 12 MiB.
    p = predict([8 * MIB, 8 * MIB, 8 * MIB, 4 * MIB])
    assert p.allocated_bytes == 28 * MIB
    assert p.reserved_bytes == 2 * LARGE_BUFFER_BYTES
    assert p.large_segments == 2


def test_large_block_left_with_1mib_or_less_is_handed_out_whole():
    p = predict([11 * MIB + MIB // 2])  # 12 MiB segment, 0.5 MiB would remain: not split
    assert (p.allocated_bytes, p.reserved_bytes, p.unsplit_large_blocks) == (12 * MIB, 12 * MIB, 1)
    assert allocated_lower_bound([11 * MIB + MIB // 2]) == 11 * MIB + MIB // 2
    q = predict([9 * MIB, 10 * MIB])  # 20 MiB segment: 9 MiB, then the 11 MiB rest serves 10 MiB whole
    assert (q.allocated_bytes, q.reserved_bytes, q.unsplit_large_blocks) == (20 * MIB, 20 * MIB, 1)


def test_small_and_large_pools_do_not_share_segments():
    p = predict([512, 2 * MIB, 512])
    assert (p.small_segments, p.large_segments) == (1, 1)
    assert p.reserved_bytes == SMALL_BUFFER_BYTES + LARGE_BUFFER_BYTES


def test_freed_neighbours_merge_and_serve_a_bigger_request():
    alloc = CachingAllocator()
    a, b = alloc.malloc(4 * MIB), alloc.malloc(4 * MIB)
    alloc.free(a)
    alloc.free(b)
    assert alloc.allocated_bytes == 0
    alloc.malloc(18 * MIB)  # the merged 20 MiB block serves it: no new segment
    assert alloc.reserved_bytes == 20 * MIB
    assert alloc.peak_allocated_bytes == 18 * MIB


def test_freeing_the_middle_block_does_not_merge_with_allocated_neighbours():
    alloc = CachingAllocator()
    a, b, c = alloc.malloc(4 * MIB), alloc.malloc(4 * MIB), alloc.malloc(4 * MIB)
    alloc.free(b)
    alloc.malloc(6 * MIB)  # 4 MiB hole and an 8 MiB tail: best fit takes the tail
    assert alloc.reserved_bytes == 20 * MIB
    alloc.malloc(6 * MIB)  # no free block of 6 MiB left (4 MiB hole, 2 MiB tail): new segment
    assert alloc.reserved_bytes == 40 * MIB
    assert a is not None and c is not None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40 * MIB), max_size=60))
def test_prediction_lies_between_its_bounds(sizes):
    p = predict(sizes)
    assert p.allocated_bytes >= allocated_lower_bound(sizes)
    if p.unsplit_large_blocks == 0:
        assert p.allocated_bytes == allocated_lower_bound(sizes)
    assert reserved_lower_bound(sizes) <= p.reserved_bytes <= sum(segment_bytes(round_size(s)) for s in sizes if s)
    assert p.reserved_bytes >= p.allocated_bytes


def test_transient_headroom_is_one_segment_per_distinct_size():
    assert transient_headroom([8 * MIB, 8 * MIB, 32 * MIB, 4, 0]) == 20 * MIB + 32 * MIB + 2 * MIB


def test_replay_of_an_allocator_trace():
    # The shape of torch.cuda.memory._snapshot()["device_traces"][i]: sizes are the requested bytes.
    trace = [
        {"action": "segment_alloc", "addr": 0, "size": 20 * MIB},
        {"action": "alloc", "addr": 0, "size": 8 * MIB},
        {"action": "alloc", "addr": 8 * MIB, "size": 100},
        {"action": "free_requested", "addr": 0, "size": 8 * MIB},
        {"action": "free_completed", "addr": 0, "size": 8 * MIB},
        {"action": "alloc", "addr": 0, "size": 6 * MIB},
    ]
    out = replay(trace)
    # 100 B lives in a 2 MiB small segment; the freed 8 MiB block is reused for 6 MiB in the 20 MiB segment.
    assert out["allocated_bytes"] == 6 * MIB + 512
    assert out["reserved_bytes"] == 20 * MIB + 2 * MIB
    assert out["peak_allocated_bytes"] == 8 * MIB + 512
    assert out["trace_segment_bytes"] == 20 * MIB


def test_allocator_modules_import_no_torch():
    code = "import sys, qcli.plan.allocator, qcli.plan.storages; sys.exit(int('torch' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- storages per tensor ----------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=1, max_value=65536))
def test_weight_storages_sum_to_storage_parts(numel, rows):
    for fmt in ALL_FORMATS:
        assert sum(size for _, size in weight_storages(fmt, numel, rows)) == storage_bytes(fmt, numel, rows)


def test_load_order_is_transformers_natural_order():
    names = ["model.layers.10.mlp.up_proj.weight", "model.layers.2.mlp.up_proj.weight", "lm_head.weight",
             "model.embed_tokens.weight", "model.layers.2.input_layernorm.weight"]  # fmt: skip
    assert sorted(names, key=load_order_key) == [
        "lm_head.weight",
        "model.embed_tokens.weight",
        "model.layers.2.input_layernorm.weight",
        "model.layers.2.mlp.up_proj.weight",
        "model.layers.10.mlp.up_proj.weight",
    ]


torch = pytest.importorskip("torch")
bnb = pytest.importorskip("bitsandbytes")


def _quant_state_parts(packed, state) -> dict[str, int]:
    parts = {"weight": packed, "absmax": state.absmax, "code": state.code}
    if state.nested:
        parts |= {"offset": state.offset, "nested_absmax": state.state2.absmax, "nested_code": state.state2.code}
    return {k: v.untyped_storage().nbytes() for k, v in parts.items()}


@pytest.mark.parametrize("shape", [(1024, 1024), (100, 37), (64, 64), (3, 5), (257, 1031)])
@pytest.mark.parametrize("fmt", [NF4, FP4, NF4_DQ, FP4_DQ], ids=lambda f: f.key)
def test_4bit_storages_equal_bitsandbytes_tensors(shape, fmt):
    weight = torch.randn(*shape, dtype=torch.bfloat16)
    packed, state = bnb.functional.quantize_4bit(
        weight, blocksize=64, compress_statistics=fmt.double_quant, quant_type=fmt.name
    )
    parts = _quant_state_parts(packed, state)
    assert dict(weight_storages(fmt, weight.numel(), shape[0])) == parts
    # Every part is a storage of its own: nothing shared between them.
    tensors = [packed, state.absmax, state.code] + (
        [state.offset, state.state2.absmax, state.state2.code] if state.nested else []
    )
    assert len({t.untyped_storage().data_ptr() for t in tensors}) == len(tensors)


def test_nested_code_is_a_copy_per_tensor_not_the_cached_map():
    w = torch.randn(256, 256, dtype=torch.bfloat16)
    _, s1 = bnb.functional.quantize_4bit(w, compress_statistics=True, quant_type="nf4")
    _, s2 = bnb.functional.quantize_4bit(w, compress_statistics=True, quant_type="nf4")
    cached = bnb.functional.name2qmap["dynamic"]
    ptrs = {s1.state2.code.data_ptr(), s2.state2.code.data_ptr(), cached.data_ptr()}
    assert len(ptrs) == 3
    assert cached.untyped_storage().nbytes() == process_storages(NF4_DQ)[0].nbytes


def test_int8_storages_equal_bitsandbytes_tensors():
    w = bnb.nn.Int8Params(torch.randn(384, 256, dtype=torch.float16), requires_grad=False, has_fp16_weights=False)
    w = w.to("cpu")  # Int8Params quantizes on its first move to a device
    assert w.dtype == torch.int8
    assert w.CB.untyped_storage().data_ptr() == w.untyped_storage().data_ptr()  # CB is the weight itself
    parts = {"weight": w.untyped_storage().nbytes(), "scb": w.SCB.untyped_storage().nbytes()}
    assert dict(weight_storages(INT8, 384 * 256, 384)) == parts


# --- a whole model, loaded for real on the CPU ------------------------------------------------------------

TINY = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 512, "hidden_size": 256,
    "intermediate_size": 704, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
}  # fmt: skip


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def tiny_checkpoint(request, tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(TINY, tie_word_embeddings=request.param)
    torch.manual_seed(0)
    config = LlamaConfig(**{k: v for k, v in cfg.items() if k not in {"model_type", "architectures"}})
    out = tmp_path_factory.mktemp("tiny")
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    return out, cfg


@pytest.mark.slow
@pytest.mark.parametrize("preset_name", ["fp32", "fp16", "bf16", "int8", "nf4", "fp4", "qlora"])
def test_model_storages_equal_a_real_bnb_load(tiny_checkpoint, preset_name):
    from transformers import AutoModelForCausalLM

    from qcli.model.describe import from_config
    from qcli.plan.presets import load_preset

    path, cfg = tiny_checkpoint
    preset = load_preset(preset_name)
    kwargs = {"dtype": getattr(torch, preset.dtype), "device_map": {"": "cpu"}}
    if preset.to_bnb_config() is not None:
        kwargs["quantization_config"] = preset.to_bnb_config()
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)  # measured before any forward pass
    spec = from_config(cfg)
    predicted = model_storages(spec, preset.weight_format(), preset.dtype, preset.skip_modules)
    assert sorted(s.nbytes for s in predicted) == loaded_storages(model)
    assert len({s.tensor for s in predicted if s.part == "weight"}) == sum(1 for _ in model.parameters())
    if preset.weight_format().kind == "dense":  # only transformers' warm-up block is freed again
        assert transient_storages(spec, preset.weight_format(), preset.dtype) == [
            warmup_bytes(spec, preset.weight_format(), preset.dtype)
        ]


LLAMA_1B = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 128256, "hidden_size": 2048,
    "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
    "head_dim": 64, "tie_word_embeddings": True, "max_position_embeddings": 131072, "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
}  # fmt: skip


def test_llama_1b_load_sequence_prediction():
    from qcli.model.describe import from_config
    from qcli.plan.storages import load_events, predict_load

    spec = from_config(LLAMA_1B)
    assert spec.params == 1_235_814_400
    # transformers' warm-up: 2 bytes per bf16 parameter (tied embeddings once) in one block, freed at once.
    assert warmup_bytes(spec, BF16, "bfloat16") == 2 * spec.params
    p = predict_load(spec, BF16, "bfloat16")
    sizes = [s.nbytes for s in model_storages(spec, BF16, "bfloat16")]
    # The warm-up segment is 2358 MiB; the tensors over 1 MiB take 2357 MiB of it in load order, so the last
    # one is left with 1 MiB or less and is handed the rest whole (should_split): allocated shows +1 MiB.
    assert p.peak_allocated_bytes == max(p.warmup_bytes, p.allocated_bytes)
    assert p.allocated_bytes - allocated_lower_bound(sizes) == MIB
    assert p.reserved_bytes == 2358 * MIB + 2 * MIB  # the warm-up segment + one small segment for the norms
    assert p.reserved_low_bytes <= p.reserved_bytes < p.reserved_high_bytes
    # 4-bit: weights are quantized from bf16 on the device; the warm-up counts 0.5 byte per quantized weight.
    q = predict_load(spec, NF4_DQ, "bfloat16")
    linear = sum(t.numel for t in spec.parameters if t.role == "linear")
    assert q.warmup_bytes == 2 * ((linear // 2 + 2 * (spec.params - linear)) // 2)
    assert q.reserved_low_bytes <= q.reserved_bytes < q.reserved_high_bytes
    assert q.peak_allocated_bytes > q.allocated_bytes  # a bf16 source weight is alive beside its packed copy
    events = load_events(spec, NF4_DQ, "bfloat16")
    assert sum(1 for _, key, _ in events if key == "bitsandbytes:dynamic_map") == 1
    assert not any(key == "bitsandbytes:dynamic_map" for _, key, _ in
                   load_events(spec, NF4_DQ, "bfloat16", first_in_process=False))  # fmt: skip
    live = {k: n for a, k, n in events if a == "alloc"}
    for a, k, _ in events:
        if a == "free":
            live.pop(k)
    # What stays allocated is exactly the model's storages plus bitsandbytes' cached map.
    kept = [s.nbytes for s in [*model_storages(spec, NF4_DQ, "bfloat16"), *process_storages(NF4_DQ)]]
    assert sorted(live.values()) == sorted(kept)
