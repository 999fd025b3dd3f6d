"""New data starts a run: an Airflow `AssetWatcher` whose trigger lists the bucket prefix of
`data.source` every `airflow.source_poll_s` seconds in the triggerer.

What the trigger saw last is kept in the watched asset's state store (Airflow's own, in the
metadata database), so it survives a restart of the triggerer: the first look records the prefix
as it is and starts nothing (the schedule or a person starts the first run); a listing that
differs from the last one (a new partition, a rewritten or deleted object: any key, version id,
ETag or size) fires one event of the data asset, which starts the retrain DAG; an unchanged
prefix fires nothing. The run itself then pins the prefix as it is then (`orchestration.pinning`).
A listing that fails (an unreachable endpoint, refused credentials) is logged as one line and
tried again at the next poll.

Credentials: the Airflow Connection `airflow.source_conn_id` (`aws_default`), read as Airflow's
Amazon provider reads it, else the triggerer's environment. This module is imported when the DAG
file is parsed: it imports nothing heavy at the top.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, AssetWatcher
from airflow.triggers.base import BaseEventTrigger, TriggerEvent

log = logging.getLogger(__name__)

STATE_KEY = "source_listing"  # the asset state store's key for the last listing seen


def data_asset(name_or_uri: str, source: str, project: Path, poll_s: float, conn_id: str | None) -> Asset:
    """The DAG's data asset (`airflow.data_asset`), watched by a SourcePrefixTrigger when
    `data.source` is in object storage (or a pin of a prefix: its prefix); unwatched otherwise.
    (The checks are pipeline.sources' is_remote / is_pin, spelt out: that module imports pandas.)"""
    watched = source
    if "://" not in source and source.lower().endswith(".json") and (project / source).is_file():
        watched = json.loads((project / source).read_text()).get("source") or source
    watchers = []
    if "://" in watched:
        trigger = SourcePrefixTrigger(source=watched, poll_s=poll_s, conn_id=conn_id)
        watchers.append(AssetWatcher(name="new_source_objects", trigger=trigger))
    if "://" in name_or_uri:
        return Asset(uri=name_or_uri, watchers=watchers)
    return Asset(name=name_or_uri, watchers=watchers)


def listing_state(objects: list) -> dict[str, Any]:
    """What identifies a listing: a digest of every object's url, version id / ETag and size."""
    digest = hashlib.sha256()
    for obj in objects:
        digest.update(f"{obj.url}\0{obj.version_id or ''}\0{obj.etag or ''}\0{obj.size}\n".encode())
    return {"digest": digest.hexdigest(), "objects": len(objects), "bytes": sum(o.size for o in objects)}


class SourcePrefixTrigger(BaseEventTrigger):
    """Fires when the objects under `source` (s3://bucket/prefix/) differ from the last listing."""

    def __init__(self, source: str, poll_s: float = 60.0, conn_id: str | None = None) -> None:
        super().__init__()
        self.source, self.poll_s, self.conn_id = source, float(poll_s), conn_id
        self._seen: dict[str, Any] | None = None  # without a state store (outside the triggerer)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"source": self.source, "poll_s": self.poll_s, "conn_id": self.conn_id},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from pipeline.sources import SourceError, list_source

        env = await self._env()
        while True:
            try:
                objects = await asyncio.to_thread(list_source, self.source, env)
            except SourceError as error:
                log.warning("listing the data source failed; trying again in %.0f s: %s", self.poll_s, error)
                await asyncio.sleep(self.poll_s)
                continue
            now = listing_state(objects)
            seen = await self._get()
            looks = int((seen or {}).get("looks", 0)) + 1
            if seen is None:
                log.info("%s: first look, %d objects; a change from now on starts a run", self.source, now["objects"])
            elif seen.get("digest") != now["digest"]:
                log.info("%s: %d objects (was %d): starting a run", self.source, now["objects"], seen.get("objects"))
                yield TriggerEvent({"source": self.source, **now})
            await self._set({**now, "looks": looks})
            await asyncio.sleep(self.poll_s)

    async def _env(self) -> Mapping[str, str] | None:
        """The triggerer's environment with the Connection's AWS_* settings over it, or None (the
        environment as it is) without a Connection."""
        if not self.conn_id:
            return None
        from airflow.sdk import Connection
        from airflow.sdk.exceptions import AirflowNotFoundException

        from orchestration.pinning import connection_env

        try:
            conn = await Connection.async_get(self.conn_id)
        except AirflowNotFoundException:
            return None
        return {
            **os.environ,
            **connection_env({"login": conn.login, "password": conn.password, "extra": conn.extra_dejson}),
        }

    async def _get(self) -> dict[str, Any] | None:
        if self.asset_state_store is None:
            return self._seen
        value = await self.asset_state_store.aget(STATE_KEY)
        return value if isinstance(value, dict) else None

    async def _set(self, value: dict[str, Any]) -> None:
        if self.asset_state_store is None:
            self._seen = value
        else:
            await self.asset_state_store.aset(STATE_KEY, value)
