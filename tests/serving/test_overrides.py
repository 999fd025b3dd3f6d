"""One override mechanism for params.yaml `serving:`: the environment and an Airflow Connection build
the same typed `Overrides`, layered in order and checked by the params' own rules."""

from __future__ import annotations

import pytest

from pipeline.params import ParamsError
from serving.overrides import Overrides
from serving.params import ServingParams
from serving.settings import ServingSettings


def test_a_later_layer_wins_and_an_earlier_one_applies_where_it_says_nothing():
    env = Overrides.from_env({"TRITON_RETRIES": "4", "TRITON_URL": "http://a.example.com:8000", "TRITON_SSL": "1"})
    connection = Overrides(params={"url": "grpc://b.example.com:8001", "protocol": "grpc"}, sources={"url": "conn"})
    settings = ServingSettings.resolve(ServingParams(), env.merged(connection))
    assert (settings.client.url, settings.client.protocol, settings.client.retries) == ("b.example.com:8001", "grpc", 4)
    assert settings.client.ssl is True  # TRITON_SSL still applies: the Connection did not say


def test_a_bad_value_names_where_it_came_from():
    given = Overrides(params={"candidate_entry": "tpu"}, sources={"candidate_entry": "Airflow Connection 'gpu'"})
    with pytest.raises(
        ParamsError, match=r"Airflow Connection 'gpu'='tpu': Input should be .* serving.candidate_entry"
    ):
        given.apply(ServingParams())
    with pytest.raises(ParamsError, match=r"TRITON_RETRIES='-1'"):
        Overrides.from_env({"TRITON_RETRIES": "-1"}).apply(ServingParams())


def test_an_unknown_key_is_refused():
    with pytest.raises(ParamsError, match=r"unknown serving keys \['ports'\]"):
        Overrides(params={"ports": 1})


def test_relative_paths_are_taken_relative_to_the_root(tmp_path):
    settings = ServingSettings.resolve(ServingParams(repository="models"), Overrides(), root=tmp_path)
    assert settings.repository == tmp_path / "models"
    url = ServingSettings.resolve(ServingParams(repository="s3://bucket/models"), Overrides(), root=tmp_path)
    assert url.repository == "s3://bucket/models"
