"""DVC stages. Each module is a pure core (`run(...)`) plus a thin CLI: `python -m stages.<name>`.

`dvc.yaml` calls the stages as `python -m stages.<name>`, so they run under whichever `python` is
first on PATH. `.venv/bin/dvc repro` without the venv activated finds the system interpreter,
which lacks the project's libraries; this check says so before a stage fails deep in an import.
"""

from __future__ import annotations

import importlib.util
import sys

# Imported by every stage (through pipeline/); a missing one means the wrong interpreter.
_REQUIRED = ("numpy", "pandas", "pyarrow", "pydantic", "yaml")


def _missing_libraries() -> list[str]:
    return [name for name in _REQUIRED if importlib.util.find_spec(name) is None]


if missing := _missing_libraries():
    raise SystemExit(
        f"the stages need the project's environment, but {sys.executable} cannot import "
        f"{', '.join(missing)}. DVC runs each stage with the `python` first on PATH: activate the "
        "project's virtual environment first (`make install`, then `source .venv/bin/activate`) and "
        "run `dvc repro` again, or run `make repro`."
    )
