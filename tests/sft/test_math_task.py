"""The embedded math task: deterministic, disjoint splits, docstring-free programs, a safe scorer."""

import ast

from overtraining.data import math_task
from overtraining.data.math_task import make_splits, run_program, score


def test_splits_are_deterministic_and_disjoint():
    train, heldout = make_splits(300, 50, seed=3)
    again, heldout_again = make_splits(300, 50, seed=3)
    assert train == again and heldout == heldout_again
    assert make_splits(300, 50, seed=4)[0] != train
    assert not {ex["question"] for ex in train} & {ex["question"] for ex in heldout}
    assert len({ex["question"] for ex in train}) == 300
    assert make_splits(100, 50, seed=3)[1] == heldout  # held-out set independent of num_train


def test_programs_have_no_docstrings_or_comments_and_cover_the_templates():
    train, _ = make_splits(300, 10, seed=0)
    for ex in train:
        program = ex["messages"][1]["content"]
        assert program.startswith("def solution():\n") and program.endswith("    return result")
        assert '"""' not in program and "'''" not in program and "#" not in program
        assert ast.get_docstring(ast.parse(program).body[0]) is None
    openings = {ex["question"].split()[1] for ex in train}
    assert len(openings) >= 5  # several templates (buys, is, travels, has, saves, costs, reads)


def test_score_accepts_the_reference_and_rejects_a_wrong_program():
    _, heldout = make_splits(0, 20, seed=0)
    assert all(score(ex["program"], ex) for ex in heldout)
    ex = heldout[0]
    assert score(ex["program"] + "<|endoftext|>\ntrailing text", ex)
    assert not score(ex["program"].replace("return result", "return result + 1"), ex)
    assert not score("I do not know", ex)
    assert score(f"so the answer is #### {int(ex['answer'])}", ex) == (ex["answer"] == int(ex["answer"]))


def test_untrusted_code_is_never_run_with_builtins(tmp_path):
    marker = tmp_path / "pwned"
    attacks = [
        f"def solution():\n    import os\n    os.system('touch {marker}')\n    return 1",
        f"def solution():\n    open('{marker}', 'w').write('x')\n    return 1",
        f"def solution():\n    handle = open('{marker}', 'w')\n    return 1",  # passes the parse, fails to run
        "def solution():\n    return ().__class__.__base__.__subclasses__()",
        f"def solution():\n    __import__('os').system('touch {marker}')\n    return 1",
        "def solution():\n    while True:\n        pass",
        "def solution():\n    x = 10 ** 10 ** 10\n    return 1",
    ]
    for program in attacks:
        assert not score(program, {"answer": 1.0}), program
    assert not marker.exists()
    assert run_program("def f():\n    return abs(-2) + max(1, 3)") == 5.0
    assert math_task.final_number("costs $1,250.50 in total") == 1250.5
