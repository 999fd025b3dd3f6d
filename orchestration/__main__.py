import sys

# The local commands (run-once, ui, registry, results, rollback, cluster) are developer tooling and
# live apart from the code that runs in Airflow tasks.
sys.exit(
    f"python -m orchestration {' '.join(sys.argv[1:])}: the local commands moved to `python -m devtools` (make run)"
)
