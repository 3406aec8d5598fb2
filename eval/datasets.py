"""Benchmark questions, and the task text the original Lumos harness builds from each.

The task text is what the planner sees after ``Task: ``; it must match the original
(allenai/lumos ``eval/<benchmark>/run_eval.py``) byte for byte, so it is built here and
nowhere else:

- HotpotQA, StrategyQA, GSM8K: ``question.strip()``
- SVAMP: ``(Body + " " + Question).strip()``
- Mind2Web: ``confirmed_task.strip()``
- WebShop: the instruction, stripped

File formats (one JSON object per line unless said otherwise):

- ``hotpotqa/dev.jsonl``: ``{"question": str, "answer": str, ...}``
- ``strategyqa/dev.jsonl``: ``{"question": str, "answer": bool}``
- ``gsm8k/dev.jsonl``: ``{"question": str, "answer": "...#### 18"}``
- ``svamp/dev.jsonl``: ``{"ID": str, "Body": str, "Question": str, "Answer": float, ...}``
- Mind2Web (``--mind2web-data``), either our compact JSONL,
  ``{"id": str, "task": str, "environment"?: str (HTML of the first page), "steps":
  [{"op": "CLICK"|"TYPE"|"SELECT", "value": str, "pos_element_ids": [str, ...]}, ...]}``,
  or Mind2Web's own release: a JSON file holding a list of tasks (or a directory of such
  files, e.g. ``test_domain/``), each ``{"annotation_id", "confirmed_task", "actions":
  [{"operation": {"op", "value"}, "pos_candidates": [{"backend_node_id": str, ...}],
  "cleaned_html"?: str, ...}]}``. Element ids are ``backend_node_id`` values.
- WebShop (``--webshop-data``): ``{"id"?: str, "instruction": str}``; the reward comes from
  the environment behind the gateway, not from this file.

GSM8K and SVAMP questions carry ``meta["gold_steps"]``, the steps their reference solution
takes (`gsm8k_gold_steps`, `svamp_gold_steps`), to compare with the subgoals the planner plans.

A line may carry its own ``id`` (``id``, ``_id``, ``ID``, ``qid`` or ``annotation_id``);
otherwise the id is a hash of the task text, so it is stable across runs and reorderings.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.data_dir import eval_data_dir
from eval.metrics import gsm8k_gold, strategyqa_gold, svamp_gold
from eval.split import is_test
from lumos.domains import DOMAINS, domain_for_dataset
from lumos.jsonl import JsonlError, json_object, read_jsonl

SPLITS = ("all", "train", "test")


class DatasetError(ValueError):
    """A data file is missing or not in the expected format."""


@dataclass(frozen=True)
class Question:
    """One benchmark item, ready to send: the task text and what counts as its answer."""

    id: str
    benchmark: str
    question: str
    task: str
    gold: Any
    meta: dict[str, Any] = field(default_factory=dict)


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise DatasetError(
            f"no data file at {path}; pass --data-dir (or the benchmark's --*-data flag)"
        )
    try:
        yield from read_jsonl(path, json_object)
    except JsonlError as exc:
        raise DatasetError(str(exc)) from exc


def _field(row: dict[str, Any], key: str, path: Path, lineno: int) -> Any:
    if key not in row:
        raise DatasetError(f"{path}:{lineno}: missing field {key!r} (has {sorted(row)})")
    return row[key]


_ID_KEYS = ("id", "_id", "ID", "qid", "annotation_id")


def question_id(row: dict[str, Any], task: str) -> str:
    for key in _ID_KEYS:
        if row.get(key) not in (None, ""):
            return str(row[key])
    return "q" + hashlib.sha1(task.encode("utf-8")).hexdigest()[:12]


def _dedupe(questions: list[Question]) -> list[Question]:
    """A repeated id (the same question twice in a file) gets ``#2``, ``#3``... in file order."""
    seen: dict[str, int] = {}
    out = []
    for q in questions:
        n = seen.get(q.id, 0) + 1
        seen[q.id] = n
        out.append(
            q
            if n == 1
            else Question(f"{q.id}#{n}", q.benchmark, q.question, q.task, q.gold, q.meta)
        )
    return out


def _load_question_answer(
    path: Path,
    benchmark: str,
    gold_of: Callable[[Any, str], Any],
    meta_of: Callable[[Any], dict[str, Any]] = lambda _: {},
) -> list[Question]:
    """Files of ``{"question", "answer"}`` lines; `gold_of(answer, "file:line")` makes the gold,
    `meta_of(answer)` the question's meta."""
    out = []
    for lineno, row in _read_jsonl(path):
        task = str(_field(row, "question", path, lineno)).strip()
        answer = _field(row, "answer", path, lineno)
        gold = gold_of(answer, f"{path}:{lineno}")
        out.append(Question(question_id(row, task), benchmark, task, task, gold, meta_of(answer)))
    return _dedupe(out)


_CALCULATOR_MARK_RE = re.compile(r"<<[^<>]*>>")
# numbers, brackets and operators; an operator is binary when a number or ")" comes before it
_EQUATION_TOKEN_RE = re.compile(r"\d*\.?\d+|[-+*/()]")
_OPERATORS = frozenset("+-*/")


def gsm8k_gold_steps(answer: str) -> int | None:
    """Lines of the solution (before ``####``) with calculator marks ``<<16-3-4=9>>``.

    `training.rules` makes one subgoal of each such line. None for a solution without marks
    (a few are written as algebra): it has no step count to compare with.
    """
    solution = answer.split("####")[0]
    return sum(1 for line in solution.splitlines() if _CALCULATOR_MARK_RE.search(line)) or None


def svamp_gold_steps(equation: str) -> int | None:
    """Binary operations in an SVAMP ``Equation``: ``( ( 6.0 * 4.0 ) + 2.0 )`` -> 2; None for none."""
    tokens = _EQUATION_TOKEN_RE.findall(equation)
    binary = sum(
        1
        for before, token in zip(tokens, tokens[1:], strict=False)
        if token in _OPERATORS and before not in _OPERATORS | {"("}
    )
    return binary or None


def _gsm8k_gold_at(answer: Any, where: str) -> str:
    if "####" not in str(answer):
        raise DatasetError(f"{where}: GSM8K answer has no '#### <number>' line")
    return gsm8k_gold(str(answer))


def load_hotpotqa(path: Path) -> list[Question]:
    return _load_question_answer(path, "hotpotqa", lambda answer, _: str(answer))


def load_strategyqa(path: Path) -> list[Question]:
    return _load_question_answer(path, "strategyqa", lambda answer, _: strategyqa_gold(answer))


def load_gsm8k(path: Path) -> list[Question]:
    return _load_question_answer(
        path, "gsm8k", _gsm8k_gold_at, lambda answer: {"gold_steps": gsm8k_gold_steps(str(answer))}
    )


def svamp_task(body: str, question: str) -> str:
    return (body + " " + question).strip()


def load_svamp(path: Path) -> list[Question]:
    out = []
    for lineno, row in _read_jsonl(path):
        task = svamp_task(
            str(_field(row, "Body", path, lineno)), str(_field(row, "Question", path, lineno))
        )
        answer = float(_field(row, "Answer", path, lineno))
        out.append(
            Question(
                question_id(row, task),
                "svamp",
                task,
                task,
                svamp_gold(answer),
                {
                    "gold_value": answer,
                    "gold_steps": svamp_gold_steps(str(row.get("Equation", ""))),
                },
            )
        )
    return _dedupe(out)


def _mind2web_rows(path: Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(file, position, task) from a compact JSONL, a Mind2Web JSON list, or a folder of those."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl"))
        if not files:
            raise DatasetError(f"{path} holds no .json or .jsonl files")
        for p in files:
            yield from _mind2web_rows(p)
        return
    if path.suffix == ".jsonl":
        for lineno, row in _read_jsonl(path):
            yield str(path), lineno, row
        return
    if not path.is_file():
        raise DatasetError(f"no Mind2Web data at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not JSON ({exc.msg})") from exc
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of Mind2Web tasks")
    for i, row in enumerate(data, start=1):
        yield str(path), i, row


def _mind2web_gold(row: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if "steps" in row:
        steps = [
            {
                "op": str(s["op"]).upper(),
                "value": str(s.get("value", "")),
                "pos_element_ids": [str(e) for e in s["pos_element_ids"]],
            }
            for s in row["steps"]
        ]
    elif "actions" in row:
        steps = [
            {
                "op": str(a["operation"]["op"]).upper(),
                "value": str(a["operation"].get("value", "")),
                "pos_element_ids": [str(c["backend_node_id"]) for c in a.get("pos_candidates", [])],
            }
            for a in row["actions"]
        ]
    else:
        raise DatasetError(
            f"{where}: a Mind2Web task needs 'steps' (compact) or 'actions' (Mind2Web release)"
        )
    if not steps:
        raise DatasetError(f"{where}: task has no steps")
    return steps


def _mind2web_environment(row: dict[str, Any]) -> str | None:
    """The page the run starts on, sent as the run's ``environment`` (the executor's HTML snapshot).

    A gateway run has one environment, so only the first step's page can be given: later
    steps act on whatever the executor makes of it, unlike the original, which fed every
    step its own recorded page (see the module docstring of `eval.scoring`).
    """
    if row.get("environment") is not None:
        return str(row["environment"])
    actions = row.get("actions") or []
    first = actions[0] if actions and isinstance(actions[0], dict) else {}
    html = first.get("cleaned_html") or first.get("raw_html")
    return None if html is None else str(html)


def load_mind2web(path: Path) -> list[Question]:
    out = []
    for file, pos, row in _mind2web_rows(path):
        where = f"{file}:{pos}"
        task_text = row.get("task", row.get("confirmed_task"))
        if task_text is None:
            raise DatasetError(f"{where}: missing 'task' (or Mind2Web's 'confirmed_task')")
        task = str(task_text).strip()
        gold = _mind2web_gold(row, where)
        meta = {"website": row.get("website"), "environment": _mind2web_environment(row)}
        out.append(Question(question_id(row, task), "mind2web", task, task, gold, meta))
    return _dedupe(out)


def load_webshop(path: Path) -> list[Question]:
    out = []
    for lineno, row in _read_jsonl(path):
        task = str(_field(row, "instruction", path, lineno)).strip()
        out.append(Question(question_id(row, task), "webshop", task, task, None))
    return _dedupe(out)


@dataclass(frozen=True)
class Benchmark:
    """How to load one benchmark and how the original ran it."""

    name: str
    load: Callable[[Path], list[Question]]
    default_file: str | None
    original_max_steps: int | None
    """Subgoals the original loop allowed (its turn count / 2); None: one per recorded step."""

    @property
    def domain(self) -> str:
        """The domain the gateway runs it as (``lumos.domains`` knows which).

        A dataset with rules of its own (StrategyQA's yes/no answers) is sent by its own
        name, which the gateway resolves to its domain variant.
        """
        domain = domain_for_dataset(self.name)
        return domain.name if DOMAINS.get(domain.name) is domain else self.name


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        # range(10) plan/ground turns in eval/hotpotqa and eval/strategyqa -> 5 subgoals.
        Benchmark("hotpotqa", load_hotpotqa, "hotpotqa/dev.jsonl", 5),
        Benchmark("strategyqa", load_strategyqa, "strategyqa/dev.jsonl", 5),
        # range(16) in eval/gsm -> 8; range(4) in eval/svamp -> 2.
        Benchmark("gsm8k", load_gsm8k, "gsm8k/dev.jsonl", 8),
        Benchmark("svamp", load_svamp, "svamp/dev.jsonl", 2),
        # Mind2Web: one subgoal per recorded action; WebShop: range(10) -> 5.
        Benchmark("mind2web", load_mind2web, None, None),
        Benchmark("webshop", load_webshop, None, 5),
    )
}


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise DatasetError(
            f"unknown benchmark {name!r}; expected one of {', '.join(BENCHMARKS)}"
        ) from None


def load_questions(
    benchmark: Benchmark,
    *,
    data_dir: Path | None = None,
    path: Path | None = None,
    limit: int | None = None,
    split: str = "all",
) -> list[Question]:
    """The benchmark's questions, from `path` or its file under `data_dir` (default
    `eval_data_dir()`); the first `limit` only.

    `split` ``test`` keeps the questions `eval.split.is_test` holds out from training
    (GSM8K and SVAMP are also annotation sources), ``train`` the others, ``all`` every one.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if path is None:
        if benchmark.default_file is None:
            raise DatasetError(
                f"{benchmark.name} has no file in the evaluation data folder; "
                f"pass --{benchmark.name}-data PATH"
            )
        path = (data_dir or eval_data_dir()) / benchmark.default_file
    questions = benchmark.load(path)
    if split != "all":
        questions = [q for q in questions if is_test(q.task) == (split == "test")]
    return questions[:limit] if limit is not None else questions
