"""params.yaml as a whole: every section is checked by its owner's schema, and a mistake names its key
wherever it is read (the Airflow side checks all of it; a stage checks the pipeline's sections)."""

from __future__ import annotations

import copy

import pytest
import yaml

from orchestration.params import parse_project_params
from pipeline.params import ParamsError, parse_params
from serving.params import serving_params


@pytest.fixture
def raw(project_root):
    return yaml.safe_load((project_root / "params.yaml").read_text())


@pytest.mark.parametrize(
    ("section", "key", "value", "named"),
    [
        ("airflow", "dag_idd", "x", "airflow.dag_idd: unknown key"),
        ("serving", "retries", -1, "serving.retries"),
        ("gate", "floors", {"accuracy": 2.0}, "gate.floors.accuracy"),
    ],
)
def test_each_owner_checks_its_section_naming_the_key(raw, section, key, value, named):
    broken = copy.deepcopy(raw)
    broken[section][key] = value
    with pytest.raises(ParamsError, match=named.replace(".", r"\.")):
        parse_project_params(broken, "params.yaml")
    stage_view = parse_params(broken, "params.yaml")  # a stage does not read it: not its to check
    if section == "serving":
        with pytest.raises(ParamsError, match=r"serving\.retries"):
            serving_params(stage_view)  # ... until a serving command reads it


def test_the_project_view_types_every_section(params):
    assert (params.serving.http_port, params.gate.report, params.airflow.dag_id) == (
        8000,
        "reports/gate.json",
        "retrain",
    )
