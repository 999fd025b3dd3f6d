"""Orchestration: the retraining DAG's building blocks (dvc.yaml graph, task specs, workspace,
stage runner, task bodies) and the local Airflow commands. Importing this package is light."""
