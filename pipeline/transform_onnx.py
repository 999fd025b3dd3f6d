"""The fitted transform (`pipeline.transform`) as ONNX nodes in front of the exported network, so
the served model takes raw rows: a FP32 input `numeric` (NaN = missing) and a string input
`categorical` (an empty string = missing), one column per feature in table order.

Standard operators plus ONNX-ML's `LabelEncoder` (string -> slot index), all of which onnxruntime
runs: IsNaN + Where fill the numeric gaps, Cast gives the indicators, LabelEncoder maps each
category to its vocabulary slot (an unseen value to the reserved unknown slot, a gap to the fill
value's slot), OneHot spreads the slot over its block, Concat lays the blocks out exactly as
`transform.encode` does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pipeline import transform

NUMERIC_INPUT = "numeric"
CATEGORICAL_INPUT = "categorical"
ML_DOMAIN = "ai.onnx.ml"
ML_OPSET = 3  # LabelEncoder with string keys and int64 values (since ai.onnx.ml 2)


def inputs(fitted: dict[str, Any]) -> list[tuple[str, int, str]]:
    """(name, width, Triton datatype) of each raw input the served model takes."""
    out = []
    if fitted["numeric"]:
        out.append((NUMERIC_INPUT, len(fitted["numeric"]), "FP32"))
    if fitted["categorical"]:
        out.append((CATEGORICAL_INPUT, len(fitted["categorical"]), "BYTES"))
    return out


def feeds(rows: transform.RawRows) -> dict[str, np.ndarray]:
    """Raw rows as the served model's inputs (what a client sends): NaN for a missing number, an
    empty string for a missing category."""
    out: dict[str, np.ndarray] = {}
    if rows.numeric.shape[1]:
        out[NUMERIC_INPUT] = np.ascontiguousarray(rows.numeric, np.float32)
    if rows.categorical.shape[1]:
        text = rows.categorical.copy()
        text[text == None] = ""  # noqa: E711 (elementwise on an object array)
        out[CATEGORICAL_INPUT] = text.astype(str)
    return out


def prepend(model: onnx.ModelProto, fitted: dict[str, Any], network_input: str) -> onnx.ModelProto:
    """`model` (taking the encoded rows as `network_input`) with the transform in front of it."""
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    parts: list[str] = []
    flags: list[str] = []

    def const(name: str, value: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(value, name))
        return name

    numeric, categorical = fitted["numeric"], fitted["categorical"]
    graph_inputs = []
    if numeric:
        graph_inputs.append(helper.make_tensor_value_info(NUMERIC_INPUT, TensorProto.FLOAT, ["batch", len(numeric)]))
        fills = const("transform/fills", np.array([c["fill"] for c in numeric], np.float32))
        nodes.append(helper.make_node("IsNaN", [NUMERIC_INPUT], ["transform/gaps"]))
        nodes.append(helper.make_node("Where", ["transform/gaps", fills, NUMERIC_INPUT], ["transform/filled"]))
        parts.append("transform/filled")
        flagged = [j for j, c in enumerate(numeric) if c["indicator"]]
        if flagged:
            nodes.append(helper.make_node("Cast", ["transform/gaps"], ["transform/gaps_f"], to=TensorProto.FLOAT))
            which = const("transform/flagged", np.array(flagged, np.int64))
            nodes.append(helper.make_node("Gather", ["transform/gaps_f", which], ["transform/numeric_flags"], axis=1))
            parts.append("transform/numeric_flags")
    if categorical:
        graph_inputs.append(
            helper.make_tensor_value_info(CATEGORICAL_INPUT, TensorProto.STRING, ["batch", len(categorical)])
        )
        on_off = const("transform/on_off", np.array([0.0, 1.0], np.float32))
        if any(c["indicator"] for c in categorical):
            axis1 = const("transform/axis1", np.array([1], np.int64))
    for j, column in enumerate(categorical):
        p = f"transform/{j}"
        vocabulary = list(column["vocabulary"])
        unknown = len(vocabulary)
        fill = vocabulary.index(column["fill"]) if column["fill"] in vocabulary else unknown
        nodes.append(
            helper.make_node(
                "Gather", [CATEGORICAL_INPUT, const(f"{p}/j", np.array(j, np.int64))], [f"{p}/text"], axis=1
            )
        )
        nodes.append(
            helper.make_node(
                "LabelEncoder",
                [f"{p}/text"],
                [f"{p}/slot"],
                domain=ML_DOMAIN,
                keys_strings=[*vocabulary, ""],
                values_int64s=[*range(unknown), fill],
                default_int64=unknown,
            )
        )
        depth = const(f"{p}/depth", np.array(unknown + 1, np.int64))
        nodes.append(helper.make_node("OneHot", [f"{p}/slot", depth, on_off], [f"{p}/onehot"], axis=-1))
        parts.append(f"{p}/onehot")
        if column["indicator"]:
            nodes.append(
                helper.make_node(
                    "LabelEncoder",
                    [f"{p}/text"],
                    [f"{p}/gap"],
                    domain=ML_DOMAIN,
                    keys_strings=[""],
                    values_int64s=[1],
                    default_int64=0,
                )
            )
            nodes.append(helper.make_node("Cast", [f"{p}/gap"], [f"{p}/gap_f"], to=TensorProto.FLOAT))
            nodes.append(helper.make_node("Unsqueeze", [f"{p}/gap_f", axis1], [f"{p}/flag"]))
            flags.append(f"{p}/flag")
    nodes.append(helper.make_node("Concat", [*parts, *flags], [network_input], axis=1))

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    kept = [i for i in graph.input if i.name != network_input]
    del graph.input[:]
    graph.input.extend([*graph_inputs, *kept])
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *body])
    graph.initializer.extend(initializers)
    # The exporter may already import ai.onnx.ml at version 1, where LabelEncoder had no
    # string-to-int64 keys: raise it to the version these nodes need.
    ml = [o for o in out.opset_import if o.domain == ML_DOMAIN]
    if ml:
        ml[0].version = max(ml[0].version, ML_OPSET)
    else:
        out.opset_import.append(helper.make_opsetid(ML_DOMAIN, ML_OPSET))
    onnx.checker.check_model(out)
    return out
