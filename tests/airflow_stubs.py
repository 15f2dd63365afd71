"""Stand-ins for the slice of Airflow's runtime an operator touches when a test calls execute()."""

from __future__ import annotations


class TaskInstanceStub:
    """The slice of a running task instance GlueJobOperator touches."""

    dag_id = "fluxo_test"
    task_id = "standardize"
    run_id = "manual__2024-03-05"
    map_index = -1
    try_number = 1
    stats_tags: dict = {}

    def __init__(self):
        self.xcom: dict = {}

    def xcom_push(self, key, value):
        self.xcom[key] = value

    def xcom_pull(self, key=None, task_ids=None):
        return self.xcom.get(key)
