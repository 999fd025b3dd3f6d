"""Developer tooling: the project on one machine, for people and for the tests and benches.

Nothing here runs inside an Airflow task, and no product module (dags, stages, pipeline, serving,
orchestration, plugins) imports it (tests/test_layout.py checks that):

- `local`: one retrain cycle through Airflow (`make run`), the web UI (`make airflow`), the model
  registry and a rollback, for a person at this machine;
- `airflow_home`: the Airflow configuration every local command and the cluster share;
- `cluster`: a local CeleryExecutor cluster on 127.0.0.1 (`make cluster`);
- `results`: the published version's metrics and reports, checked out for a person;
- `airflow_api`: a small client of Airflow's REST API (the cluster's status, tests);
- `toy`: a toy candidate in the export stage's layout (serving tests and benches).

    python -m devtools run-once | ui | registry | results | rollback | cluster up|down|status
"""
