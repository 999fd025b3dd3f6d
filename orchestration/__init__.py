"""Orchestration: the code that runs in Airflow (the retraining DAG's building blocks: dvc.yaml
graph, task specs, workspace, stage runner, task bodies, the Triton hook, notifications, the
reports plugin). Developer tooling for this machine lives in `devtools/`. Importing this package
is light."""
