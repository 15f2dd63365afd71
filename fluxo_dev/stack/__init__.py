"""Embedded local services for development, tests and the demo.

`python -m fluxo_dev.stack up|airflow|down|status|env|provision|dotenv`, or from Python::

    from fluxo_dev.stack import Stack
    env = Stack().up()      # PostgreSQL, a Kafka-protocol broker and an S3 server on 127.0.0.1
    Stack().up(feeds=True)  # + the partner-API simulator and a Kafka producer (what `make up` starts)
    Stack().start_airflow() # + Airflow's api-server, scheduler, dag-processor, triggerer (`make airflow`)
    Stack().down()          # all of it

Each service is replaced by an existing one when FLUXO_DATABASE_URL, FLUXO_KAFKA_BOOTSTRAP or
FLUXO_S3_ENDPOINT is set in the environment.
"""

from fluxo_dev.stack.core import Stack, load_env
from fluxo_dev.stack.process import StackError

__all__ = ["Stack", "StackError", "load_env"]
