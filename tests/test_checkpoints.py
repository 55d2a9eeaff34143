import json

import pytest

from overtraining.checkpoints import (
    EMBEDDED_BUDGETS,
    PYTHIA_TOKENS_PER_STEP,
    CheckpointConfig,
    UnknownCheckpointError,
    check_option,
    list_checkpoints,
    parse_token_label,
    resolve,
    token_label,
)


def test_pythia_tokens_from_step(tmp_path):
    ck = resolve(CheckpointConfig(family="pythia-70m", revision="step1000"), tmp_path)
    assert ck.source == "EleutherAI/pythia-70m" and ck.revision == "step1000"
    assert ck.tokens == 1000 * PYTHIA_TOKENS_PER_STEP == 2_097_152_000


def test_olmo_tokens_from_revision_name(tmp_path):
    ck = resolve(CheckpointConfig(family="olmo-1b", revision="step20000-tokens84B"), tmp_path)
    assert ck.source == "allenai/OLMo-1B-hf" and ck.tokens == 84_000_000_000


def test_local_checkpoint_reads_its_tokens(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "checkpoint.json").write_text(json.dumps({"tokens": 12345}))
    ck = resolve(CheckpointConfig(family="local", revision="", path=str(tmp_path)), tmp_path)
    assert ck.local and ck.tokens == 12345


def test_local_checkpoint_missing(tmp_path):
    with pytest.raises(UnknownCheckpointError, match="has no config.json"):
        resolve(CheckpointConfig(family="local", revision="", path=str(tmp_path / "nope")), tmp_path)


def test_embedded_before_pretraining_uses_the_label(tmp_path):
    ck = resolve(CheckpointConfig(family="embedded", revision="tokens_2M-cooldown"), tmp_path / "embedded")
    assert ck.embedded and ck.tokens == 2_000_000 and ck.source.endswith("embedded/tokens_2M-cooldown")


@pytest.mark.parametrize(
    ("option", "hint"),
    [
        ("pythia-70m/step1001", "did you mean pythia-70m/step1000"),
        ("pythia70m/step1000", "did you mean 'pythia-70m'"),
        ("embedded/tokens_3M", "embedded/tokens_"),
    ],  # 3M is no budget label
)
def test_unknown_checkpoint_suggests(option, hint):
    with pytest.raises(UnknownCheckpointError, match=hint):
        check_option(option)


def test_listing_is_sorted_by_tokens():
    rows = list_checkpoints("pythia-160m")
    assert rows[0] == ("step0", 0) and rows[-1] == ("step143000", 143000 * PYTHIA_TOKENS_PER_STEP)
    assert len(rows) == 154
    assert [t for _, t in rows] == sorted(t for _, t in rows)
    embedded = [rev for rev, _ in list_checkpoints("embedded")]
    assert all(f"tokens_{b}" in embedded and f"tokens_{b}-cooldown" in embedded for b in EMBEDDED_BUDGETS)


def test_token_labels_round_trip():
    for label in ("250K", "4M", "84B", "3T"):
        assert token_label(parse_token_label(label)) == label
    assert parse_token_label("1.5M") == 1_500_000
    with pytest.raises(ValueError, match="500K"):
        parse_token_label("lots")


def test_materialize_refuses_an_unknown_name_in_one_line(capsys):
    from overtraining.checkpoints import main

    assert main(["materialize", "smollm3"]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown real model 'smollm3': choose smollm2-135m"


def test_materialize_leaves_a_finished_directory_alone(tmp_path):
    from overtraining.real_models import materialize

    (tmp_path / "checkpoint.json").write_text('{"tokens": 1}')
    assert materialize("smollm2-135m", tmp_path) == tmp_path  # no GGUF read, nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json"]
