"""The non-agent maths baselines: exemplars, prompts, answer extraction and the client."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import respx

from eval.baselines import (
    METHODS,
    BaselineClient,
    Exemplar,
    build_prompt,
    exemplars,
    extract_answer,
)
from eval.datasets import DatasetError
from eval.split import is_test

BASE = "http://base.test:8000"
URL = f"{BASE}/v1/completions"
EXEMPLAR = Exemplar("Tom has 2 apples and buys 3. How many?", "2 + 3 = 5 apples.", "5")


def _questions(test: bool, n: int) -> list[str]:
    """`n` question texts that `is_test` puts in the test split (`test`) or the train split."""
    out = []
    i = 0
    while len(out) < n:
        text = f"Sam has {i} marbles and finds 2 more. How many marbles does he have?"
        if is_test(text) == test:
            out.append(text)
        i += 1
    return out


def _write_gsm8k(tmp_path: Path, rows: list[dict[str, str]]) -> Path:
    (tmp_path / "gsm8k").mkdir()
    lines = "".join(json.dumps(row) + "\n" for row in rows)
    (tmp_path / "gsm8k" / "dev.jsonl").write_text(lines, encoding="utf-8")
    return tmp_path


def test_methods():
    assert METHODS == ("fewshot-cot", "direct")


def test_exemplars_skip_test_questions_and_strip_annotations(tmp_path):
    test_q = _questions(test=True, n=1)[0]
    train_a, train_b, train_c = _questions(test=False, n=3)
    assert is_test(test_q) and not is_test(train_a)
    rows = [
        {"question": test_q, "answer": "Secret 1+1=<<1+1=2>>2\n#### 2"},
        {
            "question": "  " + train_a + "\n",
            "answer": "He has 16 - 3 = <<16-3=13>>13 left.\nSo 13 * 2 = $<<13*2=26>>26.\n#### 26",
        },
        {
            "question": train_b,
            "answer": "80,000+50,000=$<<80000+50000=130000>>130,000\n\n#### 1,130,000",
        },
        {"question": train_c, "answer": "x\n#### 3"},
    ]
    data_dir = _write_gsm8k(tmp_path, rows)

    got = exemplars(data_dir, k=2)

    assert got == [
        Exemplar(train_a, "He has 16 - 3 = 13 left. So 13 * 2 = $26.", "26"),
        Exemplar(train_b, "80,000+50,000=$130,000", "1130000"),
    ]
    assert all("Secret" not in ex.reasoning and ex.question != test_q for ex in got)
    assert len(exemplars(data_dir, k=3)) == 3


def test_too_few_exemplars_is_a_dataset_error(tmp_path):
    test_q = _questions(test=True, n=1)[0]
    (train_q,) = _questions(test=False, n=1)
    data_dir = _write_gsm8k(
        tmp_path,
        [{"question": test_q, "answer": "#### 1"}, {"question": train_q, "answer": "#### 2"}],
    )
    with pytest.raises(DatasetError, match="only 1 train-split"):
        exemplars(data_dir, k=2)


def test_missing_file_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError):
        exemplars(tmp_path)


def test_build_prompt_fewshot_cot():
    prompt = build_prompt("fewshot-cot", [EXEMPLAR], "What is 1 + 1?")
    assert prompt == (
        "Question: Tom has 2 apples and buys 3. How many?\n"
        "Answer: 2 + 3 = 5 apples. The answer is 5.\n"
        "\n"
        "Question: What is 1 + 1?\n"
        "Answer:"
    )


def test_build_prompt_direct():
    prompt = build_prompt("direct", [EXEMPLAR], "What is 1 + 1?")
    assert prompt == (
        "Question: Tom has 2 apples and buys 3. How many?\n"
        "Answer: 5\n"
        "\n"
        "Question: What is 1 + 1?\n"
        "Answer:"
    )


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match="fewshot-cot, direct"):
        build_prompt("zero-shot", [EXEMPLAR], "q")
    with pytest.raises(ValueError, match="fewshot-cot, direct"):
        extract_answer("zero-shot", "1")


@pytest.mark.parametrize(
    ("method", "completion", "expected"),
    [
        ("fewshot-cot", " 1,000 + 234 = 1,234 dollars. The answer is 1,234.", "1234"),
        ("fewshot-cot", " The answer is -3.5", "-3.5"),
        ("fewshot-cot", " 4 * 4.5 = 18 so 18 - 2 = 16", "16"),
        ("fewshot-cot", " The answer is 7. Then 9", "7"),
        ("fewshot-cot", " The answer is 5. Wait, the answer is 6.", "6"),
        ("fewshot-cot", " Sell 10-3 eggs", "3"),
        ("fewshot-cot", " no number here", None),
        ("direct", " 18\n", "18"),
        ("direct", " $1,200.", "1200"),
        ("direct", " 12 then 13", "12"),
        ("direct", "no number", None),
        ("direct", "", None),
    ],
)
def test_extract_answer(method, completion, expected):
    assert extract_answer(method, completion) == expected


@respx.mock
async def test_client_sends_the_prompt_and_extracts_the_answer():
    route = respx.post(URL).mock(
        return_value=httpx.Response(
            200,
            json={
                "model": "lumos-base",
                "choices": [{"text": " 2 * 3 = 6. The answer is 6.", "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 50, "completion_tokens": 9},
            },
        )
    )
    async with httpx.AsyncClient() as http:
        client = BaselineClient("fewshot-cot", BASE, exemplars=[EXEMPLAR], client=http)
        outcome = await client.run(
            "What is 2 times 3?", domain="maths", max_steps=8, question_id="q1"
        )

    assert outcome.answer == "6"
    assert outcome.status == "completed"
    assert outcome.steps == 0
    assert outcome.error is None and not outcome.failed
    assert outcome.latency_s >= 0.0
    body = json.loads(route.calls.last.request.content)
    assert body["model"] == "lumos-base"
    assert body["prompt"] == build_prompt("fewshot-cot", [EXEMPLAR], "What is 2 times 3?")
    assert body["prompt"].endswith("Question: What is 2 times 3?\nAnswer:")
    assert body["stop"] == ["\n\nQuestion:", "\nQuestion:"]
    assert body["temperature"] == 0
    assert body["max_tokens"] == 256


@respx.mock
async def test_direct_client_uses_a_newline_stop_and_few_tokens():
    route = respx.post(URL).mock(
        return_value=httpx.Response(200, json={"choices": [{"text": " 42"}]})
    )
    client = BaselineClient("direct", BASE, model="other", exemplars=[EXEMPLAR])
    try:
        outcome = await client.run("q?", domain="maths", max_steps=None)
    finally:
        await client.aclose()

    assert outcome.answer == "42"
    body = json.loads(route.calls.last.request.content)
    assert body["model"] == "other"
    assert body["prompt"].endswith("Question: q?\nAnswer:")
    assert body["stop"] == ["\n"]
    assert body["max_tokens"] == 16
    assert body["temperature"] == 0


@respx.mock
async def test_server_error_becomes_an_error_outcome():
    respx.post(URL).mock(return_value=httpx.Response(500, json={"error": {"message": "boom"}}))
    async with httpx.AsyncClient() as http:
        client = BaselineClient("direct", BASE, exemplars=[EXEMPLAR], client=http, max_retries=0)
        outcome = await client.run("q?", domain="maths", max_steps=None)

    assert outcome.failed
    assert outcome.answer is None
    assert outcome.error is not None
    assert outcome.error.startswith("direct baseline: ")
    assert URL in outcome.error and "500" in outcome.error


@respx.mock
async def test_connection_error_becomes_an_error_outcome():
    route = respx.post(URL).mock(side_effect=httpx.ConnectError("refused"))
    async with httpx.AsyncClient() as http:
        client = BaselineClient(
            "fewshot-cot", BASE, exemplars=[EXEMPLAR], client=http, max_retries=0
        )
        outcome = await client.run("q?", domain="maths", max_steps=None)

    assert route.call_count == 1
    assert outcome.error is not None
    assert outcome.error.startswith("fewshot-cot baseline: ")
    assert URL in outcome.error
