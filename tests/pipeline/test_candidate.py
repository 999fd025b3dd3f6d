"""The candidate's files as types: what export writes reads back the same, a card from another
version of the project keeps its extra keys, and a file that is not what export writes is named."""

from __future__ import annotations

import json
import math

import pytest

from pipeline.candidate import CandidateError, GoldenSamples, ModelCard, read_card, read_golden


def test_a_card_reads_back_as_written_with_keys_it_does_not_know(tmp_path):
    written = {
        "model_name": "digits",
        "model_config": {"arch": "cnn"},  # the file's name for the network's config
        "privacy": None,
        "inputs": [{"name": "input", "shape": [-1, 64], "datatype": "FP32"}],
        "written_by_a_later_version": {"x": 1},
    }
    (tmp_path / "model_card.json").write_text(json.dumps(written))
    card = read_card(tmp_path / "model_card.json")
    assert (card.network, card.inputs[0].name, card.privacy) == ({"arch": "cnn"}, "input", None)
    assert card.to_json() == written


def test_golden_samples_keep_a_missing_value_as_nan():
    golden = GoldenSamples(
        model_name="mixed",
        inputs={"numbers": [[1.0, math.nan]], "categories": [["a", ""]]},
        input_datatypes={"numbers": "FP32", "categories": "BYTES"},
        outputs=[[0.25, 0.75]],
        atol=1e-4,
    )
    assert math.isnan(golden.to_json()["inputs"]["numbers"][0][1])
    assert "more_outputs" not in golden.to_json()


def test_a_file_that_is_not_what_export_writes_is_named(tmp_path):
    (tmp_path / "golden.json").write_text(json.dumps({"model_name": "m", "inputs": [[1.0]], "outputs": [[1.0]]}))
    with pytest.raises(
        CandidateError, match=r"golden.json does not hold what the export stage writes \(atol: Field required\)"
    ):
        read_golden(tmp_path / "golden.json")
    with pytest.raises(CandidateError, match="model_card.json is missing; re-run the export stage"):
        read_card(tmp_path / "model_card.json")
    assert ModelCard(model_name="m").to_json() == {"model_name": "m"}
