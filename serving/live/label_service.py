"""The label service: a small authenticated HTTP API (FastAPI, run by uvicorn) that takes the true
class of a kept request, and the client that `python -m serving label` uses.

    POST /v2/models/<model>/labels   {"request_id": "...", "label": 3, "row": 0}
         Authorization: Bearer <key>
    -> 201 {"model", "request_id", "row", "label", "received_at"}
    -> 400/404/409/422 {"detail": "<why it was refused>"}, 401 without the key
    GET  /v2/health/ready

Its key is its own (never the model-control key): LIVE_LABELS_KEY, else `<state_dir>/labels.key`,
written 0600 at the service's first start. The service runs where the sample is written (the
Triton host): it reads the sample's parts to know which requests were kept.
"""

from __future__ import annotations

import hmac
import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serving import control
from serving.live.labels import LabelRefused, LabelStore

KEY_FILE = "labels.key"
ENV_KEY = "LIVE_LABELS_KEY"


def service_key(state_dir: Path, create: bool = False) -> str | None:
    """LIVE_LABELS_KEY, else the key file (made, with a fresh key, when `create` and absent)."""
    key = os.environ.get(ENV_KEY) or control.read_key(state_dir, KEY_FILE)
    if key is None and create:
        key = control.new_key()
        control.write_key(state_dir, key, KEY_FILE)
    return key


def create_app(folder: Path, classes: Sequence[int | str], retention_days: float, key: str) -> Any:
    from fastapi import Body, FastAPI, Header, HTTPException

    app = FastAPI(title="live labels", description=__doc__.splitlines()[0])
    stores: dict[str, LabelStore] = {}

    def store(model: str) -> LabelStore:
        if model not in stores:
            if not model or "/" in model or model.startswith("."):
                raise HTTPException(400, f"not a model name: {model!r}")
            stores[model] = LabelStore(folder, model, classes, retention_days)
        return stores[model]

    @app.get("/v2/health/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v2/models/{model}/labels", status_code=201)
    def add_label(
        model: str,
        request_id: str = Body(...),
        label: int | str = Body(...),
        row: int = Body(0),
        authorization: str = Header(""),
    ) -> dict[str, Any]:
        if not hmac.compare_digest(authorization.encode(), f"Bearer {key}".encode()):
            raise HTTPException(401, f"send the label service's key: Authorization: Bearer <{ENV_KEY} or {KEY_FILE}>")
        try:
            stored = store(model).add(request_id, label, row)
        except LabelRefused as refused:
            raise HTTPException(refused.status, str(refused)) from None
        return stored.__dict__

    return app


def serve(folder: Path, classes: Sequence[int | str], retention_days: float, key: str, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(folder, classes, retention_days, key), host=host, port=port, log_level="info")


def send_label(url: str, key: str, model: str, request_id: str, label: int | str, row: int = 0) -> dict[str, Any]:
    """POST one label; returns what was stored, or raises LabelRefused with the service's reason."""
    body = json.dumps({"request_id": request_id, "label": label, "row": row}).encode()
    request = urllib.request.Request(
        f"{url.rstrip('/')}/v2/models/{model}/labels",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as error:
        try:
            detail = json.loads(error.read()).get("detail")
        except (ValueError, AttributeError):
            detail = None
        raise LabelRefused(error.code, str(detail or error.reason)) from None
