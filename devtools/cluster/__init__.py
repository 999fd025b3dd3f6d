"""A local Airflow cluster on the CeleryExecutor (`make cluster`), split by job:

- `settings`: ports, workers and folders of one cluster, recorded between commands, and its secrets;
- `processes`: starting, finding and stopping its processes (PID files, process groups);
- `broker`: Redis; `database`: Postgres;
- `services`: the Airflow configuration, services and Celery workers;
- `commands`: `up`, `down`, `status` and `python -m devtools cluster ...`.
"""
