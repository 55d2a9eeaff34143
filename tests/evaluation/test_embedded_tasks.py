import json

from overtraining.config import EMBEDDED_TASKS
from overtraining.evaluation.embedded_tasks import N_DOCS, task_configs, task_data


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
                assert len(set(doc["choices"])) == 4  # the true one and three distinct shuffles
                assert len({"".join(sorted(c)) for c in doc["choices"]}) == 1  # all with the same bytes
            else:
                assert 200 <= len(doc["text"]) <= 600


def test_configs_point_at_the_generated_files(corpus, cache_dir):
    configs = task_configs(list(EMBEDDED_TASKS), corpus, cache_dir)
    assert [c["task"] for c in configs] == list(EMBEDDED_TASKS)
    for cfg in configs:
        assert cfg["dataset_path"] == "json"
        assert str(cache_dir) in cfg["dataset_kwargs"]["data_files"]["test"]
