from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from overtraining.config import GeometryConfig
from overtraining.geometry.measure import measure_checkpoint, measure_pair

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.mark.parametrize("option", ["default", "full", "none"])
def test_every_sharpness_option_composes_into_a_valid_config(option):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=None, overrides=[f"+sharpness={option}"])
    typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(GeometryConfig), cfg.sharpness))
    assert isinstance(typed, GeometryConfig)
    assert typed.kl_sigma == 1e-5
    expected = {
        "default": ["perturbation", "kl", "quantization"],
        "full": ["perturbation", "kl", "hessian_top", "hessian_trace", "quantization"],
    }
    assert typed.estimators == expected.get(option, [])
    assert typed.quant_bits == [8, 4, 3] and typed.quant_group_size == 64


def test_every_yaml_opens_with_its_command():
    for path in sorted((CONF / "sharpness").glob("*.yaml")):
        assert path.read_text().startswith(f"# python -m overtraining.run sharpness={path.stem}\n")


def test_a_misspelt_estimator_suggests_the_right_name():
    with pytest.raises(ValueError, match="did you mean 'hessian_trace'"):
        GeometryConfig(estimators=["hesian_trace"])
    with pytest.raises(ValueError, match="did you mean 'norm'"):
        GeometryConfig(perturb_mode="nrom")
    with pytest.raises(ValueError, match="trace_probes"):
        GeometryConfig(trace_probes=1)


def test_measure_checkpoint_returns_flat_metrics_of_every_estimator(model, batches, state_bits):
    cfg = GeometryConfig(estimators=["perturbation", "kl", "hessian_top", "hessian_trace"], perturb_gammas=[0.1],
                         perturb_seeds=2, kl_samples=2, eig_max_iter=8, trace_probes=3)  # fmt: skip
    before = state_bits(model)
    metrics = measure_checkpoint(model, batches, cfg)
    assert state_bits(model) == before
    for name in ["perturb/base_loss", "perturb/gamma=0.1/delta_loss_mean", "perturb/gamma=0.1/delta_loss_std",
                 "perturb/gamma=0.1/loss_mean", "perturb/gamma=0.1/ppl_mean", "sharpness/kl",
                 "sharpness/hessian_top", "sharpness/hessian_top_hvps", "sharpness/hessian_trace",
                 "sharpness/hessian_trace_se"]:  # fmt: skip
        assert isinstance(metrics[name], float), name
    assert 1 <= metrics["sharpness/hessian_top_hvps"] <= 8
    assert measure_checkpoint(model, batches, GeometryConfig(estimators=[])) == {}


def test_measure_pair_returns_drift_and_landscape(model, tiny_neox, batches):
    cfg = GeometryConfig(drift_layers=[1, -1], drift_k=4, landscape_alphas=[0.0, 1.0], landscape_2d_points=2)
    metrics = measure_pair(model, tiny_neox(1), batches, cfg)
    assert {"drift/mpa/layer=1", "drift/cka/layer=2", "drift/mpa_mean", "drift/cka_mean"} <= metrics.keys()
    assert metrics["landscape/alphas"] == [0.0, 1.0]
    assert len(metrics["landscape/losses"]) == 2
    assert len(metrics["landscape2d/losses"]) == 2
    assert measure_pair(model, model, batches, GeometryConfig(drift_layers=[], landscape_alphas=[])) == {}


def test_default_yaml_spells_out_the_dataclass_defaults():
    yaml = OmegaConf.to_container(OmegaConf.load(CONF / "sharpness" / "default.yaml"))
    defaults = OmegaConf.to_container(OmegaConf.structured(GeometryConfig()))
    assert defaults["seed"] is None  # the cell's seed, unless set
    assert yaml == defaults


def test_landscape_of_a_model_against_itself_is_flat(model, batches):
    cfg = GeometryConfig(drift_layers=[], landscape_alphas=[0.0, 0.5, 1.0])
    losses = measure_pair(model, model, batches, cfg)["landscape/losses"]
    assert losses[0] == losses[1] == losses[2]
