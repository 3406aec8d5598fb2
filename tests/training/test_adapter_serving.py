"""LoRA adapters as `make run` serves them: packed by `training.mini`, loaded by real vLLM.

Four adapters with random (non-zero) weights on the session's tiny model are packed with
`training.mini.pack_adapter` and served the way `scripts/run_local.py` serves Lumos-mini
(`services.modelserver.launch --module both` + `adapters.server_env`). Each adapter's
greedy tokens must equal what transformers + PEFT compute from the same packed folder:
vLLM applies the adapter, not just its name.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from services.modelserver.adapters import (
    ADAPTERS,
    BASE_SERVED_NAME,
    adapter_folders,
    served_name,
    server_env,
)
from tests.vllm_server import (
    VLLMProcess,
    _free_port,
    build_tiny_model,
    started_vllm,
    vllm_python,
)
from training.mini import pack_adapter

PROMPT = "Subgoal 1: Calculate the total"
TOKENS = 6


def _make_adapters(model_dir: Path, raw: Path, packed: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    for seed, adapter in enumerate(ADAPTERS):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        config = LoraConfig(
            task_type="CAUSAL_LM",
            r=8,
            lora_alpha=64,
            init_lora_weights=False,  # random A and B: the adapter changes the outputs
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"],
        )
        get_peft_model(base, config).save_pretrained(raw / adapter)
        pack_adapter(raw / adapter, packed / adapter)


def _peft_greedy(model_dir: Path, adapter: Path | None) -> list[int]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=TOKENS, do_sample=False, min_new_tokens=TOKENS)
    return [int(t) for t in out[0, ids.shape[1] :]]


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_serves_packed_adapters_under_the_gateways_names(tmp_path: Path) -> None:
    python = vllm_python()
    model_dir = build_tiny_model(python)
    packed = tmp_path / "packed"
    _make_adapters(model_dir, tmp_path / "raw", packed)
    folders = adapter_folders(packed)
    for folder in folders.values():  # what `pack` keeps: portable config, bf16 weights
        assert sorted(p.name for p in folder.iterdir()) == [
            "adapter_config.json",
            "adapter_model.safetensors",
        ]
        assert str(tmp_path) not in (folder / "adapter_config.json").read_text()

    port = _free_port()
    env = {
        **server_env(folders),
        "LUMOS_MODELSERVER_MODEL": str(model_dir),
        "LUMOS_MODELSERVER_HOST": "127.0.0.1",
        "LUMOS_MODELSERVER_PORT": str(port),
        "LUMOS_MODELSERVER_CPU_KVCACHE_SPACE_GIB": "1",
        "LUMOS_MODELSERVER_DTYPE": "float32",
        "VLLM_USE_AOT_COMPILE": "0",
    }
    argv = [sys.executable, "-m", "services.modelserver.launch", "--module", "both"]
    argv += ["--target", "cpu", "--python", str(python)]
    launched = VLLMProcess(argv, port=port, log_path=tmp_path / "vllm.log", env=env)
    with started_vllm(launched):
        base_url = launched.url
        served = {m["id"] for m in httpx.get(f"{base_url}/v1/models").json()["data"]}
        assert served == {BASE_SERVED_NAME, *(served_name(a) for a in ADAPTERS)}

        def greedy(model: str) -> list[int]:
            body = {
                "model": model,
                "prompt": PROMPT,
                "max_tokens": TOKENS,
                "min_tokens": TOKENS,
                "temperature": 0,
                "return_token_ids": True,
            }
            reply = httpx.post(f"{base_url}/v1/completions", json=body, timeout=120).json()
            return [int(t) for t in reply["choices"][0]["token_ids"]]

        base = greedy(BASE_SERVED_NAME)
        assert base == _peft_greedy(model_dir, None)
        outputs = {}
        for adapter in ADAPTERS:
            outputs[adapter] = greedy(served_name(adapter))
            assert outputs[adapter] == _peft_greedy(model_dir, packed / adapter), adapter
        assert any(tokens != base for tokens in outputs.values()), "no adapter changed the output"
