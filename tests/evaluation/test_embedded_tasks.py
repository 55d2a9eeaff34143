import json
from collections import Counter

from overtraining.config import EMBEDDED_TASKS
from overtraining.evaluation.embedded_tasks import N_DOCS, task_configs, task_data


def _same_bytes(a: str, b: str) -> bool:
    return sorted(a) == sorted(b)


def test_task_data_are_deterministic_and_well_formed(corpus, cache_dir, tmp_path):
    for task in EMBEDDED_TASKS:
        path = task_data(task, corpus, cache_dir)
        again = task_data(task, corpus, tmp_path)  # generated afresh elsewhere
        assert path.read_bytes() == again.read_bytes()
        docs = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(docs) == N_DOCS[task]
        for doc in docs:
            if "choices" in doc:
                assert len(doc["choices"]) == 4 and 0 <= doc["label"] < 4 and doc["context"]
                assert len(set(doc["choices"])) == 4  # the true one and three distinct distractors
            else:
                assert 200 <= len(doc["text"]) <= 600


def test_prose_cloze_alternates_word_order_and_nearby_continuations(corpus, cache_dir):
    docs = [json.loads(line) for line in task_data("embedded_prose_cloze", corpus, cache_dir).read_text().splitlines()]
    assert [d["kind"] for d in docs[:4]] == ["order", "continuation", "order", "continuation"]
    assert Counter(d["kind"] for d in docs) == {"order": 100, "continuation": 100}
    text = " ".join(corpus.text("ood_prose").split())
    for doc in docs:
        true = doc["choices"][doc["label"]]
        assert f"{doc['context']} {true}" in text
        others = [c for i, c in enumerate(doc["choices"]) if i != doc["label"]]
        if doc["kind"] == "order":  # shuffles: the same bytes, the same first and last word
            assert all(_same_bytes(c, true) and c.split()[::-1][:1] == true.split()[::-1][:1] for c in others)
        else:  # other sentences' second halves, of similar length
            assert all(c in text and not _same_bytes(c, true) and 2 / 3 <= len(c) / len(true) <= 3 / 2 for c in others)


def test_code_mc_has_two_name_shuffles_and_a_following_line(corpus, cache_dir):
    docs = [json.loads(line) for line in task_data("embedded_code_mc", corpus, cache_dir).read_text().splitlines()]
    lines = corpus.text("ood_tests").splitlines()
    for doc in docs[:50]:
        true = doc["choices"][doc["label"]]
        others = [c for i, c in enumerate(doc["choices"]) if i != doc["label"]]
        indent = len(true) - len(true.lstrip())
        assert sum(_same_bytes(c, true) for c in others) >= 2  # the name shuffles
        # a line of the test suite at the true line's indentation (it may also be a permutation of it)
        assert any(c in lines and len(c) - len(c.lstrip()) == indent for c in others)


def test_configs_point_at_the_generated_files(corpus, cache_dir):
    configs = task_configs(list(EMBEDDED_TASKS), corpus, cache_dir)
    assert [c["task"] for c in configs] == list(EMBEDDED_TASKS)
    for cfg in configs:
        assert cfg["dataset_path"] == "json"
        assert str(cache_dir) in cfg["dataset_kwargs"]["data_files"]["test"]
