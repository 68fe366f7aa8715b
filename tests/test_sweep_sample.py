"""A fast sample of `make sweep`: qcli against transformers' own build of the class `load` builds.

Every analytic family, the config variants the defaults never exercise, and a dozen meta-path types
(state-space, hybrid, MLA, sparse-indexer, multimodal, shared-block, encoder-style heads). The truth
(sweep/truth.py: parameters after tying, the modules transformers' bnb quantizer replaces, the storage
of the model's own cache after a prefill and one decode step) is read from sweep/truth.json when it
was written by the installed transformers, else rebuilt.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest

from qcli.model.architectures import BUILDERS, CAUSAL_LM_CLASS
from sweep.run import TRUTH_JSON, compare, qcli_answer
from sweep.truth import VARIANTS, truth

ANALYTIC = sorted(BUILDERS)
META = [
    "mamba",  # conv + SSM state, no KV
    "mamba2",  # config with {"__float__": "Infinity"}
    "falcon_h1",  # hybrid attention + mamba2, Infinity too
    "jamba",  # hybrid with MoE
    "qwen3_next",  # linear attention + full attention
    "minimax",  # linear-attention state kept outside the cache layers
    "deepseek_v3",  # MLA: the latent and the rope key are cached
    "glm_moe_dsa",  # indexer keys cached in float32
    "cohere2",  # sliding + full layers from layer_types
    "gemma3",  # multimodal: counted as Gemma3ForConditionalGeneration
    "zamba2",  # blocks shared across layers
    "roberta",  # lm_head.dense is quantized, lm_head.decoder is tied
    "bert",  # the causal-LM head class, not the bare encoder
]


@cache
def _stored() -> dict[str, Any]:
    import transformers

    data = json.loads(TRUTH_JSON.read_text()) if TRUTH_JSON.is_file() else {}
    return data.get("types", {}) if data.get("transformers") == transformers.__version__ else {}


def _truth(model_type: str) -> dict[str, Any]:
    return _stored().get(model_type) or truth(model_type)


@pytest.mark.parametrize("model_type", ANALYTIC + sorted(VARIANTS) + META)
def test_qcli_matches_transformers(model_type: str) -> None:
    t = _truth(model_type)
    answer = qcli_answer(t["config"], t["cache_batch"], t["cache_prompt"], t["cache_dtype"])
    row = compare(t, answer)
    assert answer["class"] == t["class"]
    assert row["params_ok"] and row["quant_ok"], row["notes"]
    assert row["cache_ok"] is not False, row["notes"]
    expected_path = "analytic" if model_type.split("@")[0] in BUILDERS else "meta"
    assert answer["path"] == expected_path


def test_analytic_classes_are_the_causal_lm_classes() -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    assert {mt: MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[mt] for mt in BUILDERS} == CAUSAL_LM_CLASS


@pytest.mark.parametrize("model_type", ["llama", "gpt_oss", "jamba"])
def test_llm_int8_skip_modules_replaces_the_default_list(model_type: str) -> None:
    # transformers: a given llm_int8_skip_modules replaces get_keys_to_not_convert's list (lm_head is
    # then quantized unless listed); _keep_in_fp32_modules are still added.
    from qcli.model.describe import from_config
    from qcli.plan.formats import NF4
    from qcli.plan.planner import quantized_tensors
    from sweep.truth import quantized_modules, shrunk_config

    skip = ["q_proj", "query"]
    want = set(quantized_modules(shrunk_config(model_type), 4, skip))
    got = {n.removesuffix(".weight") for n in quantized_tensors(from_config(_truth(model_type)["config"]), NF4, skip)}
    assert got == want
