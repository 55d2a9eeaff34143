"""Every trainer/ and sft_data/ option is a valid instance of its schema and names its command."""

from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from overtraining.config import SFT_DATASETS, SFTDataConfig, TrainerConfig

CONF = Path(__file__).resolve().parents[2] / "conf"
OPTIONS = [(p, TrainerConfig) for p in sorted((CONF / "trainer").glob("*.yaml"))]
OPTIONS += [(p, SFTDataConfig) for p in sorted((CONF / "sft_data").glob("*.yaml"))]


@pytest.mark.parametrize(("path", "schema"), OPTIONS, ids=lambda x: getattr(x, "stem", ""))
def test_option_matches_its_schema(path: Path, schema: type):
    text = path.read_text()
    assert text.startswith("# ") and "overtraining.run" in text.splitlines()[0]
    values = yaml.safe_load(text)
    assert set(values) <= {f.name for f in fields(schema)}
    OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))  # types and __post_init__


def test_every_data_set_has_an_option():
    assert {p.stem for p in (CONF / "sft_data").glob("*.yaml")} == set(SFT_DATASETS)
    assert {p.stem for p in (CONF / "trainer").glob("*.yaml")} >= {"cpu", "gpu", "lora", "deepspeed_zero2"}
