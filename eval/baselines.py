"""Non-agent baselines for the maths benchmarks (GSM8K, SVAMP): the base model, prompted.

To see what the Lumos agent adds, the same base model (served by vLLM's OpenAI-compatible
server, by default under the name ``lumos-base``) answers the benchmark questions on its
own, with one completion per question and no planner, grounder or tools:

- ``fewshot-cot``: few-shot chain of thought. Each exemplar shows a worked solution ending
  in ``The answer is N.``; the model writes its own reasoning for the question and the
  number after its last ``The answer is`` is the answer (else its last number).
- ``direct``: few-shot direct answering. Each exemplar shows the bare final number; the
  model answers on one line and the first number it writes is the answer.

The exemplars are the first `k` GSM8K dev questions (in file order) that
`eval.split.is_test` puts in the TRAIN split, so no test question ever appears in a
prompt; their solutions lose GSM8K's ``<<a*b=c>>`` calculator annotations. The same GSM8K
exemplars serve both GSM8K and SVAMP (common practice).

`BaselineClient.run` has the signature of `eval.agent_client.AgentClient.run` and returns a
`RunOutcome`, so the evaluation harness runs and scores a baseline exactly like the agent.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from eval.agent_client import RunOutcome
from eval.datasets import DatasetError, _read_jsonl
from eval.metrics import gsm8k_gold
from eval.split import is_test
from lumos.llm import CompletionClient

METHODS = ("fewshot-cot", "direct")

_STOPS: dict[str, list[str]] = {
    "fewshot-cot": ["\n\nQuestion:", "\nQuestion:"],
    "direct": ["\n"],
}
_MAX_TOKENS: dict[str, int] = {"fewshot-cot": 256, "direct": 16}

_ANNOTATION = re.compile(r"<<[^>]*>>")
_ANSWER_PHRASE = re.compile(r"the answer is", re.IGNORECASE)
# An optional minus that cannot be a hyphen or a subtraction ("3-4"), digits with optional
# thousands commas (groups of three), an optional decimal part.
_NUMBER = re.compile(r"(?:(?<![\w).])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


@dataclass(frozen=True)
class Exemplar:
    """One worked example shown in the prompt."""

    question: str
    reasoning: str
    answer: str


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(
            f"unknown baseline method {method!r}; expected one of {', '.join(METHODS)}"
        )


def _reasoning(solution: str) -> str:
    """GSM8K's solution text before ``####``, annotations removed, lines joined by spaces."""
    text = _ANNOTATION.sub("", solution.split("####")[0])
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def exemplars(data_dir: Path, k: int = 4) -> list[Exemplar]:
    """The first `k` train-split GSM8K questions of ``data_dir/gsm8k/dev.jsonl``, in file order."""
    path = data_dir / "gsm8k" / "dev.jsonl"
    out: list[Exemplar] = []
    if k <= 0:
        return out
    for lineno, row in _read_jsonl(path):
        if "question" not in row or "answer" not in row:
            raise DatasetError(f"{path}:{lineno}: a GSM8K line needs 'question' and 'answer'")
        task = str(row["question"]).strip()
        if is_test(task):
            continue
        solution = str(row["answer"])
        if "####" not in solution:
            raise DatasetError(f"{path}:{lineno}: GSM8K answer has no '#### <number>' line")
        out.append(Exemplar(task, _reasoning(solution), gsm8k_gold(solution).replace(",", "")))
        if len(out) == k:
            return out
    raise DatasetError(
        f"{path}: only {len(out)} train-split GSM8K question(s), {k} needed as baseline exemplars"
    )


def build_prompt(method: str, exemplars: list[Exemplar], task: str) -> str:
    """The few-shot prompt for `task`, ending in ``Answer:`` for the model to continue."""
    _check_method(method)
    parts = []
    for ex in exemplars:
        if method == "fewshot-cot":
            parts.append(
                f"Question: {ex.question}\nAnswer: {ex.reasoning} The answer is {ex.answer}.\n\n"
            )
        else:
            parts.append(f"Question: {ex.question}\nAnswer: {ex.answer}\n\n")
    parts.append(f"Question: {task}\nAnswer:")
    return "".join(parts)


def _clean(number: str) -> str:
    return number.replace(",", "").rstrip(".")


def extract_answer(method: str, completion: str) -> str | None:
    """The number a completion answers with, or None when it holds no number.

    fewshot-cot: the first number after the last ``The answer is`` (any case), else the last
    number in the text; direct: the first number in the text.
    """
    _check_method(method)
    if method == "direct":
        first = _NUMBER.search(completion)
        return _clean(first.group()) if first else None
    phrases = list(_ANSWER_PHRASE.finditer(completion))
    if phrases:
        after = _NUMBER.search(completion, phrases[-1].end())
        if after:
            return _clean(after.group())
    numbers = _NUMBER.findall(completion)
    return _clean(numbers[-1]) if numbers else None


class BaselineClient:
    """Answers tasks with one few-shot completion of the base model (no agent).

    `run` never raises: a failed model call (after `CompletionClient`'s retries) becomes a
    `RunOutcome` whose ``error`` names the method and the server. `timeout_s` bounds one
    question, retries included. Pass the process's shared `httpx.AsyncClient` as `client`;
    without one, a client is made on first use and closed by `aclose()`.
    """

    def __init__(
        self,
        method: str,
        base_url: str,
        model: str = "lumos-base",
        *,
        exemplars: list[Exemplar],
        client: httpx.AsyncClient | None = None,
        timeout_s: float = 300.0,
        max_tokens: int | None = None,
        max_retries: int = 3,
    ) -> None:
        _check_method(method)
        self.method = method
        self.exemplars = list(exemplars)
        self.max_tokens = max_tokens if max_tokens is not None else _MAX_TOKENS[method]
        self._llm = CompletionClient(
            base_url,
            model,
            client=client,
            timeout_s=timeout_s,
            deadline_s=timeout_s,
            max_retries=max_retries,
        )

    @property
    def url(self) -> str:
        return self._llm.url

    async def aclose(self) -> None:
        await self._llm.aclose()

    async def __aenter__(self) -> BaselineClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def run(
        self,
        task: str,
        *,
        domain: str,
        max_steps: int | None,
        question_id: str | None = None,
        environment: str | None = None,
    ) -> RunOutcome:
        """One question; `domain`, `max_steps`, `question_id` and `environment` are ignored."""
        prompt = build_prompt(self.method, self.exemplars, task)
        started = time.perf_counter()
        try:
            completion = await self._llm.complete(
                prompt,
                max_tokens=self.max_tokens,
                stop=_STOPS[self.method],
                temperature=0.0,
            )
        except Exception as exc:  # noqa: BLE001 - run() reports, never raises
            message = str(exc) or type(exc).__name__
            if self.url not in message:
                message = f"{self.url}: {message}"
            return RunOutcome(
                error=f"{self.method} baseline: {message}",
                latency_s=time.perf_counter() - started,
            )
        return RunOutcome(
            answer=extract_answer(self.method, completion.text),
            status="completed",
            steps=0,
            latency_s=time.perf_counter() - started,
        )
