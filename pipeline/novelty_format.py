"""The novelty file's format marker and its disabled form, without torch.

With `novelty.enabled: false` (the default) the novelty stage writes only this small JSON document,
so the stage costs a Python start and no torch import; export reads it and serves the classifier
alone. An enabled stage writes a `torch.save` file of the same format (pipeline/autoencoder.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline import atomic

FORMAT = "triton-retrain/novelty@1"
DISABLED = {"format": FORMAT, "enabled": False}


def write_disabled(path: str | Path) -> None:
    atomic.write_json(path, DISABLED)


def is_disabled(path: str | Path) -> bool:
    """True for the disabled form; False for anything else (a torch file is a zip, never JSON)."""
    try:
        return json.loads(Path(path).read_bytes()) == DISABLED
    except (UnicodeDecodeError, ValueError):
        return False
