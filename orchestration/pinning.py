"""Each run reads a pinned input: a `data.source` in object storage is listed once, when the run's
commit is prepared, and the run reads exactly that listing.

`pin_checkout` lists the bucket prefix (each object's key, size, version id or ETag, partition),
writes the listing to `PIN_FILE` in the checkout and points the checkout's `data.source` at it. The
run's commit then holds both: DVC tracks the small pin file as the clean stage's input (it never
hashes the bucket itself, which would read every object), `dvc.lock` records the pin's hash, the
model card lists the objects, and the published tag `model-v<N>` keeps the pin beside the lock.
The same listing writes the same bytes, so an unchanged prefix changes nothing and DVC reruns
nothing. A local `data.source` (the embedded data set, a folder every worker mounts) is left as
it is: DVC hashes it as before.

`python -m orchestration pin` does the same to a checkout by hand (what `dvc update` is to an
import): a person pins, then `dvc repro` reads the pinned objects.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from orchestration.remote import redact
from orchestration.workspace import set_param
from pipeline import sources
from pipeline.params import load_params

log = logging.getLogger(__name__)

PIN_FILE = "source.pin.json"  # in the project root: git tracks it (data/ is DVC's)


def pin_checkout(root: Path) -> dict[str, Any] | None:
    """Pin the checkout's `data.source` when it is a URL (or a pin: listed again from its URL);
    returns what was pinned (source, objects, bytes, whether the pin changed), None for a local
    source."""
    params_path = root / "params.yaml"
    source = load_params(params_path).data.source
    if not (sources.is_remote(source) or sources.is_pin(source)):
        return None
    pinned = sources.pin(source if sources.is_remote(source) else root / source)
    changed = sources.write_pin(root / PIN_FILE, pinned)
    if source != PIN_FILE:
        params_path.write_text(set_param(params_path.read_text(), "data", "source", PIN_FILE))
    summary = {
        "source": redact(pinned.source),
        "pin": PIN_FILE,
        "objects": len(pinned.objects),
        "bytes": pinned.total_bytes,
        "changed": changed,
    }
    log.info(
        "pinned %s: %d objects, %d bytes%s",
        summary["source"],
        summary["objects"],
        summary["bytes"],
        "" if changed else " (unchanged since the last pin)",
    )
    return summary
