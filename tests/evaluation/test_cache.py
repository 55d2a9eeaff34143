import json
import multiprocessing
import time
from pathlib import Path

from overtraining.config import EvalConfig
from overtraining.evaluation.cache import BaseEvalCache, make_key

CKPT = {"name": "embedded/tokens_1M", "source": "/runs/traj/tokens_1M", "revision": None, "tokens": 1_000_000}


def test_second_call_is_a_counted_hit_and_a_config_change_misses(tmp_path):
    cache = BaseEvalCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"ood/x/acc": 0.25, "ppl/ood_prose/loss": float(len(calls))}

    key = make_key(CKPT, EvalConfig(), heldout=[{"input_ids": [1, 2]}])
    first, hit1 = cache.get_or_compute(key, compute)
    second, hit2 = BaseEvalCache(tmp_path).get_or_compute(dict(key), compute)  # another process's view
    assert (hit1, hit2, len(calls), cache.misses) == (False, True, 1, 1) and second == first
    assert cache.get_or_compute(key, compute)[1] and cache.hits == 1

    changed = make_key(CKPT, EvalConfig(limit=5), heldout=[{"input_ids": [1, 2]}])
    metrics, hit = cache.get_or_compute(changed, compute)
    assert not hit and metrics["ppl/ood_prose/loss"] == 2.0 and len(calls) == 2
    assert make_key(CKPT, EvalConfig(), heldout=[{"input_ids": [1, 3]}]) != key  # held-out set is in the key


def test_entry_holds_its_key_and_a_foreign_or_broken_file_is_a_miss(tmp_path):
    cache = BaseEvalCache(tmp_path)
    key = make_key(CKPT, EvalConfig())
    path = cache.put(key, {"ood/x/acc": 0.5})
    assert json.loads(path.read_text())["key"] == key
    path.write_text("{not json")
    assert cache.get(key) is None
    path.write_text(json.dumps({"key": {"other": 1}, "metrics": {}}))
    assert cache.get(key) is None


def _evaluate_in_process(root: str, log: str) -> None:
    """A worker (spawned): evaluates the same key as its sibling, slowly."""

    def compute():
        with open(log, "a") as f:
            f.write("computed\n")
        time.sleep(0.5)
        return {"ood/x/acc": 0.5}

    BaseEvalCache(root).get_or_compute(make_key(CKPT, EvalConfig()), compute)


def test_two_processes_on_the_same_key_leave_one_valid_entry(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    log = tmp_path / "computes.log"
    procs = [ctx.Process(target=_evaluate_in_process, args=(str(tmp_path / "c"), str(log))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    entries = list(Path(tmp_path / "c").glob("*.json"))
    assert len(entries) == 1 and not list(Path(tmp_path / "c").glob(".*tmp*"))
    assert json.loads(entries[0].read_text())["metrics"] == {"ood/x/acc": 0.5}
    assert log.read_text().count("computed") == 1  # the lock made the second one wait and read
