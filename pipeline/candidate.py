"""The files of a candidate folder (what export writes and evaluate, push and the gate read).

Kept in a module of their own, free of torch, so that a reader does not import the exporter.
"""

ONNX_FILE = "model.onnx"  # the served graph: float32 rows in, probabilities out
TORCHSCRIPT_FILE = "model.ts"  # the same model traced, for the libtorch backend
CARD_FILE = "model_card.json"  # lineage: data hashes, params, metrics, parity, artifact hashes
GOLDEN_FILE = "golden.json"  # a few test rows with expected outputs, for smoke tests after a push
