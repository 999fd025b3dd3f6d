"""What every push, rollback, prune and status needs: how to reach the server and where its
repository lives, resolved from params `serving:` and overrides (serving/overrides.py)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from serving.client import ClientSettings
from serving.overrides import Overrides
from serving.params import ServingParams
from serving.repository import TritonRepository


@dataclass(frozen=True)
class ServingSettings:
    """Everything the operations need: how to reach the server and where its repository lives."""

    client: ClientSettings
    repository: Path | str  # a local folder (Path) or an s3:// URL (str)
    load_timeout_s: float = 60.0
    retention: int = 5
    candidate_entry: str = "triton"  # which entry of the candidate to push (see serving.repository.candidate)
    sample_dir: Path | None = None  # the live sample (serving.sample.dir) when it is on: labelled accuracy reads it

    @classmethod
    def resolve(cls, params: ServingParams, overrides: Overrides, root: Path | None = None) -> ServingSettings:
        """Params `serving:` with `overrides` (serving/overrides.py: the environment, an Airflow
        Connection, a command line), checked as params are; a relative local repository and state
        folder are taken relative to `root` when given (where `python -m serving start` runs the
        local server). A repository URL (`s3://...`) passes through as it is."""
        resolved = overrides.apply(params)
        repository = resolved.repository
        if "://" not in repository and root is not None and not Path(repository).is_absolute():
            repository = str(root / repository)
        return cls(
            client=ClientSettings.resolve(params, overrides, root),
            repository=repository if "://" in repository else Path(repository),
            load_timeout_s=resolved.load_timeout_s,
            retention=resolved.retention,
            candidate_entry=resolved.candidate_entry,
            sample_dir=_sample_dir(resolved, root),
        )

    @classmethod
    def from_params(
        cls, params: ServingParams, env: Mapping[str, str] | None = None, *, retention: int | None = None
    ) -> ServingSettings:
        """Params with the `TRITON_*` variables of `env` (default: this process's environment; see
        ClientSettings.from_params, and TRITON_MODEL_REPOSITORY, TRITON_LOAD_TIMEOUT_S,
        TRITON_CANDIDATE_ENTRY) and `retention` from a command line."""
        overrides = Overrides.from_env(os.environ if env is None else env)
        if retention is not None:
            overrides = overrides.merged(
                Overrides(params={"retention": retention}, sources={"retention": "--retention"})
            )
        return cls.resolve(params, overrides)

    @property
    def lock_timeout_s(self) -> float:
        """How long an operation waits for another one on the same model (and how long an S3 lease
        lasts): generous enough for a whole push, whose loads each take at most load_timeout_s."""
        return 10 * self.load_timeout_s

    def open_repository(self) -> TritonRepository:
        return TritonRepository(self.repository, lease_s=self.lock_timeout_s)


def _sample_dir(params: ServingParams, root: Path | None) -> Path | None:
    if params.sample.rate == 0.0:
        return None
    folder = Path(params.sample.dir)
    return folder if folder.is_absolute() or root is None else root / folder
