"""DVC stages. Each module is a pure core (`run(...)`) plus a thin CLI: `python -m stages.<name>`."""
