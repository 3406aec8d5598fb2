"""Multi-step arithmetic word problems made by a program, for the Lumos-mini planners.

GSM8K's train split holds only ~840 questions, and SVAMP's are mostly one step: too few
multi-step plans for a small planner to learn when a problem is solved. This module writes
more, from templates with random names, items and quantities: 2-6 steps each, every
intermediate value computed here (exact, integers), and each problem emitted as a GSM8K
row (``question``, ``answer`` with ``<<formula=result>>`` marks and ``#### N``) so that
the *same* rule converter (`training.rules.gsm8k_draft`) turns it into a draft, and the
same validation executes it. Nothing here evaluates text: formulas are built from numbers.

    python -m training.synthetic --count 800 --seed 7 --out .run/training/synthetic.jsonl

The annotations carry ``dataset = "maths"`` (they are no benchmark's questions, and the
test-split rule does not apply to them), ``source = "synthetic:<template>"``, and ids
``synthetic-<seed>-<n>``. `is_benchmark_question` guards that no generated task equals a
question of the evaluation data (a test checks it).
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAMES = (
    "Tom", "Maria", "Ali", "Sofia", "James", "Aisha", "Ken", "Lena", "Omar", "Grace", "Ravi",
    "Emma", "Lucas", "Mei", "Noah", "Olivia", "Pedro", "Hana", "Jack", "Zara", "Ben", "Chloe",
)  # fmt: skip
SYMBOLS = {"+": "+", "-": "-", "*": "*", "/": "/"}


@dataclass
class Solution:
    """Solution lines in GSM8K's format, built one computed step at a time."""

    lines: list[str] = field(default_factory=list)

    def step(self, before: str, a: int, op: str, b: int, after: str) -> int:
        """Append ``"{before} a op b = <<a op b=v>>v {after}."`` and return v (exact)."""
        if op == "+":
            value = a + b
        elif op == "-":
            value = a - b
        elif op == "*":
            value = a * b
        else:
            if b == 0 or a % b:
                raise ValueError(f"{a} / {b} is not a whole number")
            value = a // b
        formula = f"{a}{op}{b}"
        shown = f"{a} {op} {b}"
        self.lines.append(f"{before} {shown} = <<{formula}={value}>>{value} {after}".rstrip() + ".")
        return value


@dataclass(frozen=True)
class Problem:
    template: str
    question: str
    solution: Solution
    answer: int

    def gsm8k_row(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": "\n".join(self.solution.lines) + f"\n#### {self.answer}",
        }

    @property
    def steps(self) -> int:
        return len(self.solution.lines)


Template = Callable[[random.Random], Problem]
TEMPLATES: dict[str, Template] = {}


def template(fn: Template) -> Template:
    TEMPLATES[fn.__name__] = fn
    return fn


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("ch", "sh", "s", "x")) else "s")


def _pick(rng: random.Random, *options: str) -> str:
    return options[rng.randrange(len(options))]


@template
def boxes_given_away(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    item, boxes_word = rng.choice((("pencil", "boxes"), ("cookie", "jars"), ("marble", "bags"),
                                   ("sticker", "sheets"), ("egg", "cartons"), ("card", "packs")))  # fmt: skip
    boxes, per, given = rng.randint(2, 9), rng.randint(4, 25), 0
    s = Solution()
    total = s.step(f"{name} has", boxes, "*", per, f"{item}s in all")
    given = rng.randint(1, total - 1)
    left = s.step(f"{name} has", total, "-", given, f"{item}s left")
    verb = _pick(rng, "gives away", "loses", "uses")
    q = f"{name} has {boxes} {boxes_word} of {per} {item}s and {verb} {given}. " + _pick(
        rng, f"How many {item}s are left?", f"How many {item}s does {name} have now?"
    )
    return Problem("boxes_given_away", q, s, left)


@template
def made_and_sold(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    item = rng.choice(("cupcakes", "loaves of bread", "muffins", "pies", "sandwiches", "cookies"))
    a, b = rng.randint(10, 60), rng.randint(10, 60)
    s = Solution()
    made = s.step(f"{name} made", a, "+", b, f"{item} in total")
    sold = rng.randint(1, made - 1)
    left = s.step(f"{name} has", made, "-", sold, f"{item} left")
    q = (
        f"A baker named {name} made {a} {item} in the morning and {b} in the afternoon. "
        f"{name} sold {sold}. How many {item} are left?"
    )
    return Problem("made_and_sold", q, s, left)


@template
def shopping_change(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    (x, px), (y, py) = rng.sample(
        [("notebook", (2, 6)), ("pen", (1, 3)), ("apple", (1, 2)), ("comic book", (3, 8)),
         ("sandwich", (4, 9)), ("toy car", (5, 12))], 2)  # fmt: skip
    a, b = rng.randint(2, 6), rng.randint(2, 6)
    p, r = rng.randint(*px), rng.randint(*py)
    s = Solution()
    cost_x = s.step(f"The {_plural(x)} cost", a, "*", p, "dollars")
    cost_y = s.step(f"The {_plural(y)} cost", b, "*", r, "dollars")
    total = s.step(f"{name} spends", cost_x, "+", cost_y, "dollars")
    bill = next(v for v in (20, 50, 100, 200) if v > total)
    change = s.step(f"{name} gets", bill, "-", total, "dollars in change")
    q = (
        f"{name} buys {a} {_plural(x)} for ${p} each and {b} {_plural(y)} for ${r} each. "
        f"{name} pays with a ${bill} bill. How much change does {name} get?"
    )
    return Problem("shopping_change", q, s, change)


@template
def wages_left(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    rate, hours, days = rng.randint(8, 25), rng.randint(2, 8), rng.randint(3, 6)
    s = Solution()
    daily = s.step(f"{name} earns", rate, "*", hours, "dollars a day")
    earned = s.step(f"{name} earns", daily, "*", days, "dollars in total")
    spent = rng.randint(5, earned - 1)
    left = s.step(f"{name} has", earned, "-", spent, "dollars left")
    q = (
        f"{name} earns ${rate} an hour and works {hours} hours a day for {days} days. "
        f"{name} then spends ${spent} on a gift. How much money does {name} have left?"
    )
    return Problem("wages_left", q, s, left)


@template
def saving_goal(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    thing = rng.choice(("bike", "game console", "guitar", "tablet", "pair of skates"))
    per, weeks = rng.randint(5, 30), rng.randint(3, 12)
    s = Solution()
    saved = s.step(f"{name} saves", per, "*", weeks, "dollars")
    price = saved + rng.randint(5, 120)
    more = s.step(f"{name} still needs", price, "-", saved, "dollars")
    q = (
        f"{name} wants a {thing} that costs ${price}. {name} saves ${per} every week for "
        f"{weeks} weeks. How much more money does {name} need?"
    )
    return Problem("saving_goal", q, s, more)


@template
def farm_legs(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    two, four = rng.choice((("chickens", "cows"), ("ducks", "goats"), ("geese", "pigs"),
                            ("turkeys", "sheep")))  # fmt: skip
    a, b = rng.randint(3, 30), rng.randint(2, 20)
    s = Solution()
    legs_a = s.step(f"The {two} have", a, "*", 2, "legs")
    legs_b = s.step(f"The {four} have", b, "*", 4, "legs")
    total = s.step("The animals have", legs_a, "+", legs_b, "legs in total")
    q = f"{name}'s farm has {a} {two} and {b} {four}. How many legs do the animals have in total?"
    return Problem("farm_legs", q, s, total)


@template
def two_legs_trip(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    v, t, u, r = rng.randint(30, 70), rng.randint(2, 5), rng.randint(20, 60), rng.randint(1, 4)
    s = Solution()
    first = s.step(f"{name} drives", v, "*", t, "miles first")
    second = s.step(f"{name} drives", u, "*", r, "miles after that")
    total = s.step(f"{name} drives", first, "+", second, "miles in total")
    q = (
        f"{name} drives at {v} miles per hour for {t} hours, then at {u} miles per hour "
        f"for {r} hours. How many miles does {name} drive in total?"
    )
    return Problem("two_legs_trip", q, s, total)


@template
def share_equally(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    friends = rng.randint(2, 6)
    share = rng.randint(2, 12)
    bags = rng.randint(2, 6)
    eaten = rng.randint(1, 10)
    per_bag = (friends * share + eaten + bags - 1) // bags
    s = Solution()
    total = s.step(f"{name} has", bags, "*", per_bag, "candies")
    eaten = total - friends * share  # keeps the share whole
    rest = s.step(f"{name} has", total, "-", eaten, "candies to share")
    each = s.step("Each friend gets", rest, "/", friends, "candies")
    q = (
        f"{name} has {bags} bags with {per_bag} candies in each bag. {name} eats {eaten} "
        f"candies and shares the rest equally among {friends} friends. "
        "How many candies does each friend get?"
    )
    return Problem("share_equally", q, s, each)


@template
def discount_total(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    item = rng.choice(("jacket", "lamp", "backpack", "chair", "board game"))
    percent = rng.choice((10, 20, 25, 50))
    price = rng.choice([p for p in range(20, 201, 10) if p * percent % 100 == 0])
    n = rng.randint(2, 5)
    s = Solution()
    off = s.step("The discount is", price * percent, "/", 100, "dollars")
    each = s.step(f"Each {item} costs", price, "-", off, "dollars after the discount")
    total = s.step(f"{name} pays", each, "*", n, "dollars")
    q = (
        f"A {item} costs ${price}. The store gives a {percent}% discount. "
        f"How much does {name} pay for {n} {item}s?"
    )
    # the first step's formula multiplies price by percent: show it as such
    s.lines[0] = s.lines[0].replace(
        f"The discount is {price * percent} / 100 = <<{price * percent}/100={off}>>",
        f"The discount is {price} * {percent} / 100 = <<{price}*{percent}/100={off}>>",
    )
    return Problem("discount_total", q, s, total)


@template
def fraction_then_spend(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    k = rng.choice((2, 3, 4, 5))
    money = k * rng.randint(6, 40)
    s = Solution()
    part = s.step(f"{name} spends", money, "/", k, "dollars on books")
    after = s.step(f"{name} has", money, "-", part, "dollars after the books")
    lunch = rng.randint(1, after - 1)
    left = s.step(f"{name} has", after, "-", lunch, "dollars left")
    frac = {2: "half", 3: "a third", 4: "a quarter", 5: "a fifth"}[k]
    q = (
        f"{name} has ${money}. {name} spends {frac} of it on books and then ${lunch} on lunch. "
        f"How much money does {name} have left?"
    )
    return Problem("fraction_then_spend", q, s, left)


@template
def ages(rng: random.Random) -> Problem:
    a, b, c = rng.sample(NAMES, 3)
    age, older, times = rng.randint(4, 20), rng.randint(2, 10), rng.choice((2, 3))
    s = Solution()
    age_b = s.step(f"{b} is", age, "+", older, "years old")
    age_c = s.step(f"{c} is", age_b, "*", times, "years old")
    if rng.random() < 0.5:
        two = s.step(f"{b} and {c} together are", age_b, "+", age_c, "years old")
        answer = s.step("All three together are", two, "+", age, "years old")
        question = f"How old are {a}, {b} and {c} together?"
    else:
        answer, question = age_c, f"How old is {c}?"
    word = {2: "twice", 3: "three times"}[times]
    q = (
        f"{a} is {age} years old. {b} is {older} years older than {a}. "
        f"{c} is {word} as old as {b}. {question}"
    )
    return Problem("ages", q, s, answer)


@template
def orchard(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    rows, per_row, fruit = rng.randint(3, 9), rng.randint(4, 12), rng.randint(5, 20)
    kind, kinds = rng.choice((("apple", "apples"), ("orange", "oranges"), ("peach", "peaches"),
                              ("lemon", "lemons")))  # fmt: skip
    s = Solution()
    trees = s.step(f"{name} has", rows, "*", per_row, "trees")
    fruits = s.step("The trees grow", trees, "*", fruit, f"{kinds}")
    sold = rng.randint(1, fruits // 2)
    after_sale = s.step(f"{name} has", fruits, "-", sold, f"{kinds} after selling")
    eaten = rng.randint(1, min(20, after_sale - 1))
    left = s.step(f"{name} has", after_sale, "-", eaten, f"{kinds} left")
    q = (
        f"{name} has {rows} rows of {kind} trees with {per_row} trees in each row. Each tree "
        f"grows {fruit} {kinds}. {name} sells {sold} {kinds} and the family eats {eaten}. "
        f"How many {kinds} are left?"
    )
    return Problem("orchard", q, s, left)


@template
def school_supplies_split(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    a, pa = rng.randint(2, 8), rng.randint(2, 6)
    b, pb = rng.randint(2, 8), rng.randint(1, 4)
    c, pc = rng.randint(1, 3), rng.randint(10, 30)
    s = Solution()
    x = s.step("The notebooks cost", a, "*", pa, "dollars")
    y = s.step("The pens cost", b, "*", pb, "dollars")
    z = s.step("The backpacks cost", c, "*", pc, "dollars")
    xy = s.step("The notebooks and pens cost", x, "+", y, "dollars")
    total = s.step("Everything costs", xy, "+", z, "dollars")
    divisors = [p for p in (2, 3, 4, 5) if total % p == 0]
    fee_text = ""
    if divisors:
        people = rng.choice(divisors)
    else:  # a delivery fee makes the bill split evenly four ways
        people, fee = 4, (-total) % 4
        total = s.step("With the delivery fee everything costs", total, "+", fee, "dollars")
        fee_text = f" They also pay a ${fee} delivery fee."
    each = s.step("Each person pays", total, "/", people, "dollars")
    q = (
        f"{name} and friends buy {a} notebooks at ${pa} each, {b} pens at ${pb} each and {c} "
        f"backpacks at ${pc} each.{fee_text} They split the cost equally among {people} "
        "people. How much does each person pay?"
    )
    return Problem("school_supplies_split", q, s, each)


@template
def reading_pages(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    per_day, days, extra = rng.randint(5, 30), rng.randint(2, 7), rng.randint(5, 40)
    s = Solution()
    read = s.step(f"{name} reads", per_day, "*", days, "pages in the first days")
    total_read = s.step(f"{name} reads", read, "+", extra, "pages in total")
    pages = total_read + rng.randint(10, 200)
    left = s.step(f"{name} has", pages, "-", total_read, "pages left to read")
    q = (
        f"A book has {pages} pages. {name} reads {per_day} pages a day for {days} days and "
        f"then {extra} pages on the weekend. How many pages are left to read?"
    )
    return Problem("reading_pages", q, s, left)


@template
def monthly_savings(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    salary = rng.choice(range(1500, 5001, 100))
    rent = rng.choice(range(500, salary // 2, 50))
    food = rng.choice(range(100, 600, 25))
    months = rng.choice((3, 6, 12))
    s = Solution()
    after_rent = s.step(f"{name} has", salary, "-", rent, "dollars after rent")
    saved = s.step(f"{name} saves", after_rent, "-", food, "dollars a month")
    total = s.step(f"{name} saves", saved, "*", months, "dollars")
    q = (
        f"{name} earns ${salary} a month, pays ${rent} in rent and spends ${food} on food. "
        f"{name} saves the rest. How much does {name} save in {months} months?"
    )
    return Problem("monthly_savings", q, s, total)


@template
def tank_fill(rng: random.Random) -> Problem:
    rate = rng.randint(2, 10)
    minutes = rng.randint(3, 30)
    have = rng.randint(5, 100)
    s = Solution()
    needed = s.step("The tank needs", rate * minutes + have, "-", have, "more liters")
    time = s.step("Filling it takes", needed, "/", rate, "minutes")
    q = (
        f"A tank holds {rate * minutes + have} liters and already has {have} liters of water. "
        f"A hose adds {rate} liters per minute. How many minutes does it take to fill the tank?"
    )
    return Problem("tank_fill", q, s, time)


def generate(count: int, seed: int) -> list[Problem]:
    """`count` problems, round-robin over the templates, reproducible from `seed`."""
    rng = random.Random(seed)
    names = sorted(TEMPLATES)
    problems: list[Problem] = []
    seen: set[str] = set()
    attempts = 0
    while len(problems) < count:
        attempts += 1
        if attempts > count * 20:
            raise RuntimeError(f"only {len(problems)} distinct problems after {attempts} tries")
        problem = TEMPLATES[names[attempts % len(names)]](rng)
        if problem.question in seen:
            continue
        seen.add(problem.question)
        problems.append(problem)
    return problems


def drafts(problems: Sequence[Problem], seed: int) -> list[Any]:
    """Rule-converted drafts (`training.rules.gsm8k_draft`) labelled as synthetic."""
    from training.rules import gsm8k_draft

    out = []
    for n, problem in enumerate(problems):
        draft = gsm8k_draft(problem.gsm8k_row())
        out.append(
            draft.model_copy(
                update={
                    "id": f"synthetic-{seed}-{n}",
                    "dataset": "maths",
                    "source": f"synthetic:{problem.template}",
                }
            )
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from training.annotation import write_jsonl
    from training.validate import check_drafts

    parser = argparse.ArgumentParser(
        prog="python -m training.synthetic", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--count", type=int, default=800)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    problems = generate(args.count, args.seed)
    outcomes = check_drafts(drafts(problems, args.seed))
    passed = [o.annotation for o in outcomes if o.annotation is not None]
    failed = [o for o in outcomes if o.annotation is None]
    for o in failed[:5]:
        print(f"  failed {o.draft.id}: {o.failure}")
    n = write_jsonl(args.out, passed)
    histogram: dict[int, int] = {}
    for a in passed:
        histogram[len(a.steps)] = histogram.get(len(a.steps), 0) + 1
    steps = ", ".join(f"{k} steps: {v}" for k, v in sorted(histogram.items()))
    print(f"synthetic: {n}/{len(problems)} passed validation ({steps}); wrote {args.out}")
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
