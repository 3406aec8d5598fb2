"""A real fine-tuning smoke run on CPU: tiny random LLaMA, a few steps, checkpoint, export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from eval.split import split  # noqa: E402
from training.annotate import annotate_rules, task_of  # noqa: E402
from training.annotation import write_jsonl  # noqa: E402
from training.config import load_config  # noqa: E402
from training.export import ENV_NAMES, export, serve_settings  # noqa: E402
from training.sft import CONFIG_FILE, main, train  # noqa: E402

RECIPE = Path(__file__).resolve().parents[2] / "training" / "recipes" / "small.toml"


@pytest.fixture(scope="module")
def train_file(svamp_rows, tmp_path_factory):
    train_rows, _ = split(svamp_rows, lambda r: task_of("svamp", r))
    report = annotate_rules("svamp", train_rows[:8])
    path = tmp_path_factory.mktemp("data") / "svamp.jsonl"
    write_jsonl(path, report.passed)
    return path


def _config(tiny_model, train_file, out, *extra):
    return load_config(
        RECIPE,
        [
            f"model_name_or_path={tiny_model}",
            f'train_files=["{train_file}"]',
            f"output_dir={out}",
            "per_device_batch_size=4",
            "effective_batch_size=4",
            "num_train_epochs=100",
            "learning_rate=0.003",
            "logging_steps=1",
            *extra,
        ],
    )


@pytest.mark.slow
def test_smoke_run_loss_is_finite_and_falls_and_the_checkpoint_loads(
    tiny_model, train_file, tmp_path
) -> None:
    out = tmp_path / "run"
    result = train(_config(tiny_model, train_file, out, "max_steps=20"))
    losses = result.losses
    assert len(losses) == 20 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses
    saved = json.loads((out / CONFIG_FILE).read_text())
    assert saved["module"] == "plan" and saved["data"]["examples"] == result.examples == 8
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([[1, 5, 9]])
    assert model(ids).logits.shape == (1, 3, model.config.vocab_size)

    served = export(out, tmp_path / "serve")
    assert (served / "config.json").is_file() and (served / "model.safetensors").is_file()
    assert (served / "tokenizer.json").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(served)
    assert torch.equal(reloaded(ids).logits, model(ids).logits)
    assert serve_settings(served, "plan")[0] == f"{ENV_NAMES['plan']}={served.resolve()}"


def test_export_script_prints_how_to_serve_the_module_it_was_trained_as(
    tiny_model, train_file, tmp_path, capsys
) -> None:
    from training.export import main as export_main

    out = tmp_path / "run"
    train(_config(tiny_model, train_file, out, "max_steps=1", "module=ground"))
    assert export_main(["--checkpoint", str(out), "--out", str(tmp_path / "serve")]) == 0
    printed = capsys.readouterr().out
    assert f"LUMOS_GROUNDER_SERVER_MODEL={(tmp_path / 'serve').resolve()}" in printed
    assert "python -m services.modelserver.launch --module grounder" in printed
    assert (
        export_main(["--checkpoint", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    )


@pytest.mark.slow
def test_lora_adapter_is_merged_into_a_plain_model_on_export(
    tiny_model, train_file, tmp_path
) -> None:
    from peft import PeftModel

    out = tmp_path / "lora"
    train(
        _config(
            tiny_model,
            train_file,
            out,
            "max_steps=3",
            "lora=true",
            "lora_r=4",
            'lora_target_modules=["q_proj", "v_proj"]',
        )
    )
    assert (out / "adapter_config.json").is_file()
    served = export(out, tmp_path / "serve", base=str(tiny_model), dtype="float32")
    assert not (served / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(served)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(out))
    ids = torch.tensor([[1, 5, 9, 13]])
    assert torch.allclose(merged(ids).logits, adapted(ids).logits, atol=1e-5)


def test_sft_script_reports_a_bad_recipe_without_a_traceback(capsys) -> None:
    assert main(["--recipe", str(RECIPE), "--override", "modul=plan"]) == 2
    assert "unknown setting(s) modul" in capsys.readouterr().err


def test_answer_token_loss_equals_the_models_own_loss_on_a_padded_batch(
    tiny_model, tiny_tokenizer
) -> None:
    from training.encode import IGNORE_INDEX, Encoded
    from training.sft import PaddingCollator, answer_token_loss

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    long = Encoded(list(range(5, 45)), [IGNORE_INDEX] * 30 + list(range(35, 45)))
    short = {"input_ids": list(range(7, 27)), "labels": [IGNORE_INDEX] * 12 + list(range(19, 27))}
    batch = PaddingCollator(pad_token_id=0)([long, short])
    assert batch["input_ids"].shape == (2, 40)
    ours = answer_token_loss(model, batch)
    reference = model(**batch).loss  # logits for every position, then the same mean
    assert torch.allclose(ours, reference, atol=1e-5), (float(ours), float(reference))
    ours.backward()  # and it trains: gradients reach the weights
    assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_accumulated_micro_batches_weigh_every_labelled_token_the_same(
    tiny_model, tiny_tokenizer
) -> None:
    """Two micro-batches of one optimizer step, one of short answers and one of long ones:
    with the step's token count the summed losses are the mean over all labelled tokens,
    which a mean per micro-batch is not (it weighs the short batch's tokens up)."""
    from training.encode import IGNORE_INDEX, Encoded
    from training.sft import PaddingCollator, answer_token_loss

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    short = [Encoded(list(range(5, 15)), [IGNORE_INDEX] * 8 + [13, 14]) for _ in range(2)]
    long = [
        Encoded(list(range(20, 60)), [IGNORE_INDEX] * 10 + list(range(30, 60))) for _ in range(2)
    ]
    collate = PaddingCollator(pad_token_id=0)
    micro = [collate(short), collate(long)]
    n_items = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro)
    assert n_items == 2 * 2 + 2 * 30

    weighted = sum(answer_token_loss(model, b, n_items) for b in micro)
    per_token = []
    for b in micro:  # every labelled token's loss, one by one, from the model's own logits
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        targets = b["labels"][:, 1:]
        keep = targets != IGNORE_INDEX
        per_token.append(
            torch.nn.functional.cross_entropy(
                logits[:, :-1][keep].float(), targets[keep], reduction="none"
            )
        )
    token_mean = torch.cat(per_token).mean()
    assert torch.allclose(weighted, token_mean, atol=1e-5), (float(weighted), float(token_mean))
    batch_means = sum(answer_token_loss(model, b) for b in micro) / 2
    assert not torch.allclose(batch_means, token_mean, atol=1e-3)


@pytest.mark.slow
def test_a_planner_trained_where_stopping_depends_on_the_task_learns_that_dependence(
    tiny_model, tmp_path
) -> None:
    """Short one-step conversations outnumber long three-step ones 3:1 and are batched apart
    (length grouping); whether to stop after step 1 is told by the task's first word. The
    trained planner must stop after step 1 for one kind and go on for the other."""
    from lumos.trace import ExecutedAction, Step
    from training.annotation import Annotation
    from training.stopcheck import check

    def annotation(n: int, steps: int) -> Annotation:
        done = []
        for k in range(1, steps + 1):
            prefix = "" if k == 1 else "No, I will keep planning. "
            done.append(
                Step(
                    index=k,
                    subgoal=f"{prefix}Subgoal {k}: Calculate {n} plus {k}.",
                    grounding=f"R{k} = Calculator({n}+{k})",
                    executed=[
                        ExecutedAction(
                            outputs=[f"R{k}"],
                            name="Calculator",
                            args=f"{n}+{k}",
                            values=[str(n + k)],
                        )  # fmt: skip
                    ],
                )
            )
        word = "Quick" if steps == 1 else "Long"
        return Annotation(
            id=f"{word}-{n}", dataset="maths", task=f"{word} sum: add to {n}.", steps=done
        )

    rows = [annotation(n, 1) for n in range(60)] + [annotation(n, 3) for n in range(100, 120)]
    data = tmp_path / "stop.jsonl"
    write_jsonl(data, rows)
    out = tmp_path / "planner"
    config = load_config(
        RECIPE,
        [
            f"model_name_or_path={tiny_model}",
            f'train_files=["{data}"]',
            f"output_dir={out}",
            "per_device_batch_size=4",
            "effective_batch_size=8",
            "num_train_epochs=12",
            "learning_rate=0.003",
            "logging_steps=50",
        ],
    )
    train(config)
    from transformers import AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out)
    quick = check(model, tokenizer, [annotation(n, 1) for n in range(200, 210)])
    long = check(model, tokenizer, [annotation(n, 3) for n in range(300, 310)])
    after_first = [d for d in long.decisions if d.after_step == 1]
    assert all(d.predicted_stop for d in quick.decisions), quick.summary()
    assert not any(d.predicted_stop for d in after_first), long.summary()


def test_init_adapter_continues_a_trained_lora_adapter_instead_of_fresh_weights(
    tiny_model, train_file, tmp_path
) -> None:
    from safetensors.torch import load_file

    lora = ["lora=true", "lora_r=4", 'lora_target_modules=["q_proj", "v_proj"]']
    first = tmp_path / "first"
    train(_config(tiny_model, train_file, first, "max_steps=3", *lora))
    trained = load_file(first / "adapter_model.safetensors")
    assert any(t.abs().sum() > 0 for n, t in trained.items() if "lora_B" in n)

    # a zero learning rate keeps the weights where training starts: the first adapter's
    again = tmp_path / "again"
    train(
        _config(
            tiny_model,
            train_file,
            again,
            "max_steps=1",
            "learning_rate=0.0",
            f"init_adapter={first}",
            *lora,
        )  # fmt: skip
    )
    continued = load_file(again / "adapter_model.safetensors")
    assert continued.keys() == trained.keys()
    assert all(torch.equal(continued[n], trained[n]) for n in trained)

    fresh = tmp_path / "fresh"  # the control: without init_adapter lora_B starts at zero
    train(_config(tiny_model, train_file, fresh, "max_steps=1", "learning_rate=0.0", *lora))
    assert all(
        t.abs().sum() == 0
        for n, t in load_file(fresh / "adapter_model.safetensors").items()
        if "lora_B" in n
    )


def test_init_adapter_without_lora_is_refused(tiny_model, train_file, tmp_path) -> None:
    from training.config import ConfigError

    with pytest.raises(ConfigError, match="init_adapter needs lora = true"):
        _config(tiny_model, train_file, tmp_path / "x", "init_adapter=somewhere")
