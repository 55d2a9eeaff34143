"""The embedded SFT task: TinyGSM-style math word problems answered by short Python programs.

Each example is a word problem drawn from one of several templates (shopping, ages, rates,
sharing, savings, discounts, work) with seeded numbers and names, and its answer is a
program in the TinyGSM shape::

    def solution():
        apples = 5
        apple_price = 2
        result = apples * apple_price
        return result

The answers carry no docstrings and no comments: a later format probe asks whether a
pretrained docstring habit (the stdlib corpus is full of them) survives fine-tuning on data
without any (Springer et al.'s blog example with Gemma-2B and TinyGSM).

``make_splits`` is deterministic in its seed; the held-out problems come from their own
random stream (the same held-out set whatever ``num_train``) and no training question
equals a held-out one.

``score`` executes a completion's program to compare its final number with the reference.
Generated code is never trusted: the source is parsed first and rejected if it imports, uses
attributes or underscore names, or defines no function; it then runs in a separate ``python -I -S``
process whose builtins are a handful of arithmetic functions, under CPU, memory and
wall-clock limits.
"""

from __future__ import annotations

import ast
import math
import random
import re
import subprocess
import sys

NAMES = (
    "Ava",
    "Ben",
    "Chloe",
    "Dev",
    "Emma",
    "Farid",
    "Grace",
    "Hugo",
    "Iris",
    "Jonas",
    "Kira",
    "Liam",
    "Maya",
    "Noah",
    "Olga",
    "Pablo",
    "Quinn",
    "Rosa",
    "Sami",
    "Tara",
)
ITEMS = ("apple", "pencil", "notebook", "muffin", "ticket", "marble", "sticker", "candle", "orange", "comic")
TIMEOUT_S = 2.0

_RUNNER = """
import resource, sys
resource.setrlimit(resource.RLIMIT_CPU, (1, 1))
resource.setrlimit(resource.RLIMIT_AS, (256 << 20, 256 << 20))
SAFE = {f.__name__: f for f in (abs, min, max, round, int, float, sum, range, len, pow, divmod)}
source, entry = sys.stdin.read().split("\\0")
env = {"__builtins__": SAFE}
exec(compile(source, "<program>", "exec"), env)
print(repr(float(env[entry]())))
"""


def _program(assignments: list[tuple[str, object]], result: str) -> str:
    lines = ["def solution():"] + [f"    {name} = {value}" for name, value in assignments]
    return "\n".join(lines + [f"    result = {result}", "    return result"])


def _shopping(rng: random.Random) -> tuple[str, str]:
    name, (a, b) = rng.choice(NAMES), rng.sample(ITEMS, 2)
    na, pa, nb, pb = rng.randint(2, 12), rng.randint(1, 9), rng.randint(2, 12), rng.randint(1, 9)
    q = f"{name} buys {na} {a}s at ${pa} each and {nb} {b}s at ${pb} each. How much does {name} spend in total?"
    code = _program(
        [(f"{a}s", na), (f"{a}_price", pa), (f"{b}s", nb), (f"{b}_price", pb)], f"{a}s * {a}_price + {b}s * {b}_price"
    )
    return q, code


def _ages(rng: random.Random) -> tuple[str, str]:
    x, y = rng.sample(NAMES, 2)
    age, times, years = rng.randint(3, 15), rng.randint(2, 5), rng.randint(1, 20)
    q = f"{x} is {age} years old. {y} is {times} times as old as {x}. How old will {y} be in {years} years?"
    code = _program([(f"{x.lower()}_age", age), ("times", times), ("years", years)], f"{x.lower()}_age * times + years")
    return q, code


def _rates(rng: random.Random) -> tuple[str, str]:
    vehicle = rng.choice(("train", "car", "bus", "cyclist", "boat"))
    speed, hours, extra = rng.randint(10, 90), rng.randint(2, 8), rng.randint(5, 50)
    q = (
        f"A {vehicle} travels at {speed} miles per hour for {hours} hours and then {extra} more miles. "
        "How many miles does it travel in all?"
    )
    return q, _program([("speed", speed), ("hours", hours), ("extra_miles", extra)], "speed * hours + extra_miles")


def _sharing(rng: random.Random) -> tuple[str, str]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    friends, each, kept = rng.randint(2, 9), rng.randint(2, 12), rng.randint(1, 10)
    total = friends * each + kept
    q = (
        f"{name} has {total} {item}s, keeps {kept} and shares the rest equally among {friends} friends. "
        f"How many {item}s does each friend get?"
    )
    return q, _program([(f"{item}s", total), ("kept", kept), ("friends", friends)], f"({item}s - kept) // friends")


def _savings(rng: random.Random) -> tuple[str, str]:
    name = rng.choice(NAMES)
    weekly, weeks, spent = rng.randint(5, 40), rng.randint(3, 12), rng.randint(1, 30)
    q = f"{name} saves ${weekly} every week for {weeks} weeks and then spends ${spent}. How much money is left?"
    return q, _program([("weekly", weekly), ("weeks", weeks), ("spent", spent)], "weekly * weeks - spent")


def _discount(rng: random.Random) -> tuple[str, str]:
    item = rng.choice(ITEMS)
    price, percent, count = 20 * rng.randint(1, 10), rng.choice((10, 20, 25, 50)), rng.randint(1, 5)
    q = f"A {item} costs ${price}. It is on sale for {percent}% off. How much do {count} {item}s cost on sale?"
    return q, _program(
        [("price", price), ("discount", percent / 100), ("count", count)], "price * (1 - discount) * count"
    )


def _work(rng: random.Random) -> tuple[str, str]:
    name = rng.choice(NAMES)
    per_day, days = rng.randint(5, 30), rng.randint(2, 15)
    q = (
        f"{name} reads {per_day} pages a day. A book has {per_day * days} pages. "
        f"How many days does {name} need to finish it?"
    )
    return q, _program([("pages", per_day * days), ("pages_per_day", per_day)], "pages // pages_per_day")


TEMPLATES = (_shopping, _ages, _rates, _sharing, _savings, _discount, _work)


def _example(question: str, program: str) -> dict:
    env: dict = {}
    exec(program, {"__builtins__": {}}, env)  # our own generated code, no builtins needed
    return {
        "question": question,
        "program": program,
        "answer": float(env["solution"]()),
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": program}],
    }


def generate(n: int, rng: random.Random, exclude: frozenset[str] = frozenset()) -> list[dict]:
    """``n`` distinct problems (none whose question is in ``exclude``), templates in turn at random."""
    out, seen = [], set(exclude)
    for _ in range(50 * n + 100):
        if len(out) == n:
            return out
        question, program = rng.choice(TEMPLATES)(rng)
        if question not in seen:
            seen.add(question)
            out.append(_example(question, program))
    raise ValueError(f"could not draw {n} distinct problems; ask for fewer")


def make_splits(num_train: int, num_heldout: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Train and held-out problems, disjoint by question, deterministic in ``seed``."""
    heldout = generate(num_heldout, random.Random(f"heldout-{seed}"))
    train = generate(num_train, random.Random(f"train-{seed}"), frozenset(ex["question"] for ex in heldout))
    return train, heldout


def extract_program(completion: str) -> str | None:
    """The first ``def ...:`` function in a completion and its indented body, else None.

    Text from the first special token (``<|endoftext|>`` etc.) on is dropped.
    """
    completion = completion.split("<|")[0]
    match = re.search(r"^def \w+\(.*?\).*?:\n(?:[ \t]+.*(?:\n|$)|[ \t]*\n)+", completion, re.MULTILINE)
    return match.group(0) if match else None


def _entry_point(source: str) -> str | None:
    """Name of the program's function if the source is safe to run, else None."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.Attribute, ast.Global, ast.Nonlocal, ast.Lambda)):
            return None
        if isinstance(node, ast.Name) and node.id.startswith("_"):
            return None
    functions = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
    return functions[0] if functions else None


def run_program(source: str) -> float | None:
    """Runs an untrusted program's function in a sandboxed subprocess; its number, or None."""
    entry = _entry_point(source)
    if entry is None:
        return None
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _RUNNER],
            input=f"{source}\0{entry}",
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
        return float(proc.stdout.strip()) if proc.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError):
        return None


def final_number(text: str) -> float | None:
    """The answer in text: after GSM8K's ``####`` when present, else the last number."""
    tail = text.split("####")[-1]
    numbers = re.findall(r"-?\d[\d,]*(?:\.\d+)?", tail)
    return float(numbers[-1].replace(",", "")) if numbers else None


def score(completion: str, example: dict) -> bool:
    """Exact match of the final number with ``example["answer"]``.

    A completion holding a ``def`` is executed (sandboxed, see the module docstring);
    otherwise its final number is read (GSM8K-style text). Floats match to 1e-6 relative.
    """
    program = extract_program(completion)
    value = run_program(program) if program else final_number(completion)
    return value is not None and math.isclose(value, float(example["answer"]), rel_tol=1e-6, abs_tol=1e-6)
