"""explain: the report names the classes and shows each input next to its attribution map (image
rows), lists every feature by mean |attribution| (tabular rows), lists the confused class pairs,
and is where the Reports link and `make run`'s list of reports find it. Models have random weights
(what is checked is the report, not accuracy; tests/pipeline/test_explain.py checks the maths)."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_image_table

from devtools import results
from orchestration.dvc_graph import read_graph
from orchestration.reports_ui import render, report_outputs
from pipeline import explain as core
from pipeline.models import CNNConfig, MLPConfig, build_model, load_model, save_model, set_input_scale
from pipeline.params import DataParams, EmbedParams, ExplainParams, SplitParams
from pipeline.rows import SplitTable
from stages import _cli, explain
from stages.embed import run as embed
from stages.split import split_stratified

ROOT = Path(__file__).resolve().parents[2]
TABLE_SPLIT = SplitParams(seed=0, val_fraction=0.15, test_fraction=0.3, folds=[0, 1])
PNG = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


@pytest.fixture(scope="module")
def image_case(tmp_path_factory, params):
    table = tiny_image_table(rows_per_class=30)
    split = SplitTable.of(table, split_stratified(table["label"].to_numpy(), params.split), params.data)
    torch.manual_seed(0)
    config = CNNConfig(64, tuple(params.data.classes), (8, 8), 0.0, channels=(4,), hidden=(16,))
    model = build_model(config)
    set_input_scale(model, torch.zeros(64), torch.full((64,), 1 / 16))
    path = tmp_path_factory.mktemp("image") / "model.pt"
    save_model(path, model, config)
    return path, split.split_rows("test"), split.features, params.data


@pytest.fixture(scope="module")
def tabular_case(tmp_path_factory):
    data = DataParams(source="unused", label="label", feature_prefix="", classes=[0, 1])
    table = embed(EmbedParams(dataset="breast_cancer"), data).iloc[:300].reset_index(drop=True)
    assignment = split_stratified(table["label"].to_numpy(), TABLE_SPLIT)
    split = SplitTable.of(table, assignment, data)
    train = split.split_rows("train").float32()
    torch.manual_seed(0)
    config = MLPConfig(split.n_features, (0, 1), None, 0.0, hidden=(16,))
    model = build_model(config)
    set_input_scale(model, torch.from_numpy(train.mean(axis=0)), torch.from_numpy(1 / (train.std(axis=0) + 1e-6)))
    path = tmp_path_factory.mktemp("tabular") / "model.pt"
    save_model(path, model, config)
    return path, split.split_rows("test"), split.features, data


def pngs(page: str) -> list[np.ndarray]:
    from matplotlib import image

    return [image.imread(io.BytesIO(base64.b64decode(data)), format="png") for data in PNG.findall(page)]


def test_image_report_names_every_class_and_shows_input_beside_its_map(image_case):
    path, test, features, data = image_case
    params = ExplainParams(enabled=True, n_steps=16, rows_per_class=2, confused_pairs=2, examples_per_pair=2)
    result = explain.run(path, test, features, data, params)
    page = result.report_html
    assert "<title>Model explanations</title>" in page
    for k in data.classes:
        assert f"<th>class {k}</th>" in page
        assert len(re.findall(rf"test row \d+: class {k}, predicted", page)) >= 2  # its rows, captioned
    shown = 2 * len(data.classes)
    pairs = re.findall(r"<h3>class (\d+) predicted as (\d+): (\d+) test row", page)
    assert 1 <= len(pairs) <= 2  # random weights: mistakes are certain
    figures = page.count("<figure>")
    assert shown < figures <= shown + 2 * 2
    images = pngs(page)
    assert len(images) == 2 * figures  # each figure: the input, then its map
    assert all(img.shape[:2] == (8, 8) for img in images)
    first = test.x[int(re.search(r"test row (\d+): class", page).group(1))].reshape(8, 8)
    grey = images[0][..., 0]  # gray_r: more ink, darker
    assert np.corrcoef(grey.ravel(), -first.ravel().astype(float))[0, 1] > 0.99
    assert result.metrics["rows_explained"] >= shown and result.metrics["n_steps"] == 16
    assert result.metrics["completeness_max_abs_delta"] < 0.05


def test_tabular_report_lists_every_feature_by_mean_absolute_attribution(tabular_case):
    path, test, features, data = tabular_case
    params = ExplainParams(enabled=True, n_steps=16, max_rows=40)
    page = explain.run(path, test, features, data, params).report_html
    assert "<img" not in page
    listed = re.findall(r"<tr><td>(\d+)</td><td>([^<]+)</td><td>([0-9.e+-]+)</td>", page)
    assert [name for _, name, _ in listed] and sorted(name for _, name, _ in listed) == sorted(features)
    values = [float(v) for _, _, v in listed]
    assert values == sorted(values, reverse=True)
    # the ranking is that of the attributions themselves
    model, _ = load_model(path)
    rows = core.evenly_spaced(len(test), 40)
    x = test.float32()[rows]
    predicted = core.logits(model, x).argmax(axis=1)
    importance = core.integrated_gradients(model, x, predicted, 16).importance()
    assert listed[0][1] == features[int(importance.argmax())]


def test_off_writes_a_page_that_says_so_and_computes_nothing(tmp_path, image_case):
    _, test, features, data = image_case
    result = explain.run(tmp_path / "absent.pt", test, features, data, ExplainParams(enabled=False))
    assert result.metrics == {"enabled": False}
    assert "explain.enabled: false" in result.report_html
    # the stage's own imports stay light when it is off: no torch, no Captum
    probe = "import sys, stages.explain; print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'captum'}))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_model_of_other_classes_is_refused_naming_the_fix(tmp_path, image_case):
    _, test, features, data = image_case
    config = MLPConfig(64, (0, 1), None, 0.0, hidden=(4,))
    save_model(tmp_path / "model.pt", build_model(config), config)
    with pytest.raises(_cli.StageError, match="retrain"):
        explain.run(tmp_path / "model.pt", test, features, data, ExplainParams(enabled=True))


def test_the_report_is_a_dvc_output_that_the_reports_page_and_the_results_list_show():
    graph = read_graph(ROOT)
    assert "reports/explain.html" in graph.stages["explain"].outs
    assert "evaluate" not in graph.ancestors("explain")  # its own stage: evaluate stays torch-free
    # what the Reports link of the explain task shows: its HTML output, served as it is
    lock = {"lock": {"explain": {"outs": [{"path": "reports/explain.html", "md5": "0" * 32}]}}}
    assert [o["path"] for o in report_outputs(lock)] == ["reports/explain.html"]
    page = b"<!doctype html><title>Model explanations</title>"
    assert render("explain", "r1", [("reports/explain.html", page)], None) == page.decode()
    # what `make run` (orchestration results) pulls and lists
    assert "reports/explain.html" in results.shown_outputs(SimpleNamespace(graph=graph))
