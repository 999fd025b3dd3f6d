"""The live Triton model repository (a local folder or an S3 prefix) and the exported candidate
that feeds it.

- `candidate`: models/candidate's entries, model names, configs, content hashes;
- `versions`: `TritonRepository`, numeric versions, pins and prune on any store;
- `history`: the history of pins that rollback and prune follow;
- `store`, `local`, `s3`: where the files live.
"""

from serving.repository.candidate import (
    METADATA,
    MODEL_NAME,
    Candidate,
    config_json,
    config_text,
    files_hash,
    load_candidate,
    parse_config,
    pin_versions,
    pinned_versions,
    validate_model_name,
)
from serving.repository.history import History
from serving.repository.store import RepositoryError, RepositoryFull
from serving.repository.versions import HISTORY, TritonRepository, open_store

__all__ = [
    "HISTORY",
    "METADATA",
    "MODEL_NAME",
    "Candidate",
    "History",
    "RepositoryError",
    "RepositoryFull",
    "TritonRepository",
    "config_json",
    "config_text",
    "files_hash",
    "load_candidate",
    "open_store",
    "parse_config",
    "pin_versions",
    "pinned_versions",
    "validate_model_name",
]
