"""Checkpoint names -> Hub branches and tokens, resolved offline against faked branch lists."""

import datetime as dt
import json
import time
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import huggingface_hub.constants
import pytest
import yaml

from overtraining import checkpoints as ck
from overtraining.checkpoints import (
    EMBEDDED_BUDGETS,
    PYTHIA_TOKENS_PER_STEP,
    CheckpointConfig,
    UnknownCheckpointError,
    branch_list,
    check_option,
    hub_family,
    list_checkpoints,
    parse_token_label,
    refs_cache_path,
    resolve,
    token_label,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
# Branch names of allenai/OLMo-1B-hf as its -hf naming has them (the original repo says 84B).
HF_BRANCHES = ["main", "step1000-tokens4B", "step20000-tokens83B", "step330000-tokens1383B", "step738020-tokens3094B"]


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """No network, an empty Hugging Face cache, an empty project cache; the Hub refuses."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OVERTRAINING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))

    def no_hub(repo_id, **kwargs):
        raise AssertionError(f"the Hub was asked for {repo_id} offline")

    monkeypatch.setattr(huggingface_hub, "list_repo_refs", no_hub)
    return tmp_path / "cache"


@pytest.fixture
def hub(monkeypatch):
    """The Hub is reachable and answers list_repo_refs from ``hub.branches`` (calls counted)."""
    state = SimpleNamespace(branches=list(HF_BRANCHES), calls=[])

    def list_repo_refs(repo_id, **kwargs):
        state.calls.append(repo_id)
        return SimpleNamespace(branches=[SimpleNamespace(name=b) for b in state.branches])

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(ck, "hub_reachable", lambda timeout=2.0: True)
    monkeypatch.setattr(huggingface_hub, "list_repo_refs", list_repo_refs)
    return state


def olmo(revision: str, cache: Path, **kw):
    return resolve(CheckpointConfig(family="olmo-1b", revision=revision, **kw), cache / "embedded", cache)


def test_pythia_tokens_from_step(offline):
    c = resolve(CheckpointConfig(family="pythia-70m", revision="step1000"), offline, offline)
    assert c.source == "EleutherAI/pythia-70m" and c.revision == "step1000"
    assert c.tokens == 1000 * PYTHIA_TOKENS_PER_STEP == 2_097_152_000
    assert c.listing == "documented formula"


def test_olmo_resolves_by_step_and_by_exact_name_from_the_branch_list(offline, hub):
    by_step, by_name = olmo("step20000", offline), olmo("step20000-tokens83B", offline)
    assert by_step == by_name
    assert by_step.source == "allenai/OLMo-1B-hf" and by_step.revision == "step20000-tokens83B"
    assert by_step.name == "olmo-1b/step20000-tokens83B" and by_step.tokens == 83_000_000_000
    assert by_step.listing.startswith("Hub listing of")
    assert hub.calls == ["allenai/OLMo-1B-hf"]  # listed once, then read from the cache


def test_hf_naming_comes_from_the_branch_list_not_a_formula(offline, hub):
    step, tokens_per_step = 20000, hub_family("olmo-1b").tokens_per_step
    assert round(step * tokens_per_step / 1e9) == 84  # what a formula would name it
    assert olmo(f"step{step}", offline).tokens == 83_000_000_000  # what the -hf repo names it
    with pytest.raises(UnknownCheckpointError, match="its branch at step 20000 is step20000-tokens83B"):
        olmo("step20000-tokens84B", offline)  # the original allenai/OLMo-1B's name


def test_tokens_come_from_the_name_or_the_step():
    assert hub_family("olmo-2-1b").tokens_of("stage1-step140000-tokens294B") == 294 * 10**9
    assert hub_family("pythia-1b-deduped").tokens_of("step512") == 512 * PYTHIA_TOKENS_PER_STEP
    amber = hub_family("amber")
    assert abs(amber.tokens_of("ckpt_359") - 1259.13e9) < 1e6  # the final checkpoint saw the whole mix
    with pytest.raises(UnknownCheckpointError, match="not a branch of the olmo-1b"):
        hub_family("olmo-1b").tokens_of("stage1-step1000-tokens5B")


def test_listing_is_cached_on_disk_and_reused_offline(offline, hub, monkeypatch):
    olmo("step330000", offline)
    path = refs_cache_path(offline, "allenai/OLMo-1B-hf")
    doc = json.loads(path.read_text())
    assert path == offline / "hub_refs" / "allenai" / "OLMo-1B-hf.json"
    assert doc["repo"] == "allenai/OLMo-1B-hf" and doc["branches"] == sorted(HF_BRANCHES)
    assert dt.datetime.fromisoformat(doc["fetched"]).date() == dt.datetime.now(dt.timezone.utc).date()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.branches = []  # an offline run must not ask again
    c = olmo("step738020", offline)
    assert c.revision == "step738020-tokens3094B" and hub.calls == ["allenai/OLMo-1B-hf"]
    assert c.listing.startswith("Hub listing of") and "stale" not in c.listing


def test_stale_listing_is_refreshed_online_and_kept_offline(offline, hub):
    fam, path = hub_family("olmo-1b"), refs_cache_path(offline, "allenai/OLMo-1B-hf")
    month_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30)
    ck.write_refs_cache(path, fam.repo, ["step1000-tokens4B"], month_ago)
    stale = branch_list(fam, offline, online=False)
    assert stale.branches == ("step1000-tokens4B",) and "(stale)" in stale.source and not hub.calls
    fresh = branch_list(fam, offline, online=True)
    assert hub.calls == [fam.repo] and "step20000-tokens83B" in fresh.branches
    assert json.loads(path.read_text())["branches"] == sorted(HF_BRANCHES)
    branch_list(fam, offline, online=True)  # fresh now: not listed again
    assert hub.calls == [fam.repo]


def test_unknown_step_is_refused_with_the_nearest_existing_step(offline, hub):
    with pytest.raises(UnknownCheckpointError) as err:
        olmo("step300000", offline)
    msg = str(err.value)
    assert "allenai/OLMo-1B-hf has no branch at step 300000" in msg and "\n" not in msg
    assert "did you mean olmo-1b/step330000 (step330000-tokens1383B, 1383B tokens)" in msg


def test_seed_is_partial_and_says_how_to_complete_it(offline):
    with pytest.raises(UnknownCheckpointError, match=r"seed snapshot \(partial\).*--online"):
        olmo("step550000", offline)


def test_no_list_offline_is_refused_fast_in_one_line(offline):
    t0 = time.perf_counter()
    with pytest.raises(UnknownCheckpointError) as err:
        olmo("step1000", offline, repo="someorg/OLMo-1B-copy")
    msg = str(err.value)
    assert time.perf_counter() - t0 < 3 and "\n" not in msg
    assert "someorg/OLMo-1B-copy" in msg and "step1000" in msg and "with Hub access" in msg


def test_revisions_in_the_local_hf_cache_resolve_offline(offline, tmp_path):
    refs = tmp_path / "hf" / "models--allenai--OLMo-2-1124-7B" / "refs"
    refs.mkdir(parents=True)
    (refs / "stage1-step5000-tokens21B").write_text("0" * 40)  # downloaded once; not in the seed
    c = resolve(CheckpointConfig(family="olmo-2-7b", revision="step5000"), offline, offline)
    assert c.revision == "stage1-step5000-tokens21B" and c.tokens == 21 * 10**9
    assert "1 in the local HF cache" in c.listing


def test_stage2_branches_are_not_pretraining_checkpoints(offline):
    with pytest.raises(UnknownCheckpointError, match="not of the olmo-2-1b pretraining trajectory.*checkpoint=hub"):
        check_option("olmo-2-1b/stage2-ingredient3-step23852-tokens51B")
    with pytest.raises(UnknownCheckpointError, match="neither a branch of allenai/OLMo-2-0425-1B nor stepN"):
        check_option("olmo-2-1b/latest")
    check_option("olmo-2-1b/stage1-step140000-tokens294B")  # the model card's example


def preset_checkpoints() -> dict[str, list[str]]:
    out = {}
    for path in sorted((CONF / "experiment").glob("*.yaml")):
        params = (yaml.safe_load(path.read_text()).get("hydra") or {}).get("sweeper", {}).get("params", {})
        names = [n.strip() for n in str(params.get("checkpoint", "")).split(",") if n.strip()]
        if any(not n.startswith("embedded/") for n in names):
            out[path.stem] = names
    return out


@pytest.mark.parametrize(("preset", "names"), sorted(preset_checkpoints().items()))
def test_every_preset_checkpoint_resolves_offline(offline, preset, names):
    for name in names:
        family, _, rev = name.partition("/")
        c = resolve(CheckpointConfig(family=family, revision=rev), offline, offline)
        assert c.tokens > 0 or rev == "step0", name


def test_families_table_is_complete():
    fams = ck.hub_families()
    sizes = ("14m", "31m", "70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b")
    assert {f"pythia-{s}{d}" for s in sizes for d in ("", "-deduped")} <= set(fams)
    assert {"olmo-1b", "olmo-2-1b", "olmo-2-7b", "amber"} <= set(fams)
    for fam in fams.values():
        assert "step" in fam.branch.groupindex and fam.tokens in ("name", "step")
        assert fam.tokens == "step" or "tokens" in fam.branch.groupindex
        assert all(fam.branch.fullmatch(b) for b in fam.formula)
    assert len(fams["pythia-12b"].formula) == 154 and len(fams["amber"].formula) == 360


@pytest.mark.parametrize(
    ("option", "hint"),
    [
        ("pythia-70m/step1001", "did you mean pythia-70m/step1000"),
        ("pythia70m/step1000", "did you mean 'pythia-70m'"),
        ("embedded/tokens_3M", "embedded/tokens_"),  # 3M is no budget label
        ("olmo-1b/step20001", "did you mean olmo-1b/step20000 (step20000-tokens83B"),
        ("amber/ckpt_360", "did you mean amber/step359 (ckpt_359"),
    ],
)
def test_unknown_checkpoint_suggests(option, hint):
    with pytest.raises(UnknownCheckpointError, match=hint.replace("(", r"\(")):
        check_option(option)


def test_listing_is_sorted_by_tokens():
    rows = list_checkpoints("pythia-160m")
    assert rows[0] == ("step0", 0) and rows[-1] == ("step143000", 143000 * PYTHIA_TOKENS_PER_STEP)
    assert len(rows) == 154
    assert [t for _, t in rows] == sorted(t for _, t in rows)
    embedded = [rev for rev, _ in list_checkpoints("embedded")]
    assert all(f"tokens_{b}" in embedded and f"tokens_{b}-cooldown" in embedded for b in EMBEDDED_BUDGETS)


def test_cli_lists_with_the_source_of_the_list(offline, hub, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert ck.main(["olmo-1b"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# olmo-1b: allenai/OLMo-1B-hf,") and "seed snapshot (partial)" in out
    assert "olmo-1b/step20000\tstep20000-tokens83B\t83,000,000,000 tokens" in out
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert ck.main(["olmo-1b", "--online"]) == 0
    out = capsys.readouterr().out
    assert "4 checkpoints; branch list: Hub listing of" in out and hub.calls == ["allenai/OLMo-1B-hf"]
    assert ck.main(["olmo-1b"]) == 0 and "Hub listing of" in capsys.readouterr().out  # cached now


def test_cli_online_failure_is_one_line(offline, hub, capsys, monkeypatch):
    def down(repo_id, **kwargs):
        raise OSError("connection refused")

    monkeypatch.setattr(huggingface_hub, "list_repo_refs", down)
    assert ck.main(["olmo-2-7b", "--online"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "allenai/OLMo-2-1124-7B" in err and "without --online" in err


def test_local_checkpoint_reads_its_tokens(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "checkpoint.json").write_text(json.dumps({"tokens": 12345}))
    c = resolve(CheckpointConfig(family="local", revision="", path=str(tmp_path)), tmp_path)
    assert c.local and c.tokens == 12345


def test_local_checkpoint_missing(tmp_path):
    with pytest.raises(UnknownCheckpointError, match="has no config.json"):
        resolve(CheckpointConfig(family="local", revision="", path=str(tmp_path / "nope")), tmp_path)


def test_embedded_before_pretraining_uses_the_label(tmp_path):
    c = resolve(CheckpointConfig(family="embedded", revision="tokens_2M-cooldown"), tmp_path / "embedded")
    assert c.embedded and c.tokens == 2_000_000 and c.source.endswith("embedded/tokens_2M-cooldown")


def test_token_labels_round_trip():
    for label in ("250K", "4M", "84B", "3T"):
        assert token_label(parse_token_label(label)) == label
    assert parse_token_label("1.5M") == 1_500_000
    with pytest.raises(ValueError, match="500K"):
        parse_token_label("lots")


def test_no_seed_no_cache_names_the_listing_command(offline, monkeypatch):
    monkeypatch.setattr(ck, "_seed", lambda: {})
    fix = r"allenai/OLMo-2-1124-7B.*overtraining.checkpoints olmo-2-7b --online"
    with pytest.raises(UnknownCheckpointError, match=fix):
        check_option("olmo-2-7b/step928646")


def test_materialize_refuses_an_unknown_name_in_one_line(capsys):
    from overtraining.checkpoints import main

    assert main(["materialize", "smollm3"]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown real model 'smollm3': choose smollm2-135m"


def test_materialize_leaves_a_finished_directory_alone(tmp_path):
    from overtraining.real_models import materialize

    (tmp_path / "checkpoint.json").write_text('{"tokens": 1}')
    assert materialize("smollm2-135m", tmp_path) == tmp_path  # no GGUF read, nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json"]
