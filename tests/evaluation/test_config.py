from pathlib import Path

import pytest
import yaml

from overtraining.config import EvalConfig, check_choice

CONF = Path(__file__).resolve().parents[2] / "conf" / "eval"


def test_defaults_are_the_embedded_suite():
    cfg = EvalConfig()
    assert cfg.task_list == ["embedded_prose_cloze", "embedded_code_mc", "embedded_prose_ppl"]
    assert cfg.loop_batch_size == 8
    assert EvalConfig(batch_size="auto").loop_batch_size == 16


@pytest.mark.parametrize(
    ("kwargs", "suggestion"),
    [
        ({"suite": "embeded"}, "'embedded'"),
        ({"tasks": ["embedded_prose_clze"]}, "'embedded_prose_cloze'"),
        ({"ppl_splits": ["ood_pros"]}, "'ood_prose'"),
        ({"ppl_hub": ["wikitext"]}, "'wikitext2'"),
    ],
)
def test_a_wrong_name_suggests_the_nearest(kwargs, suggestion):
    with pytest.raises(ValueError, match=f"did you mean {suggestion}") as err:
        EvalConfig(**kwargs)
    assert "\n" not in str(err.value)


def test_bad_batch_size_and_limit_fail():
    with pytest.raises(ValueError, match="batch_size"):
        EvalConfig(batch_size="eight")
    with pytest.raises(ValueError, match="limit"):
        EvalConfig(limit=0)
    check_choice("x", "a", ("a", "b"))


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_preset_builds_and_opens_with_its_command(path):
    text = path.read_text()
    assert text.startswith("# python -m overtraining.run")
    data = yaml.safe_load(text)
    assert data.pop("defaults") == ["eval_schema"]
    EvalConfig(**data)
