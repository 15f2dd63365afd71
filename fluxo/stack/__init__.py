"""Embedded local services for development, tests and the demo.

`python -m fluxo.stack up|down|status|env`, or from Python::

    from fluxo.stack import Stack
    env = Stack().up()      # PostgreSQL, a Kafka-protocol broker and an S3 server on 127.0.0.1
    Stack().down()

Each service is replaced by an existing one when FLUXO_DATABASE_URL, FLUXO_KAFKA_BOOTSTRAP or
FLUXO_S3_ENDPOINT is set in the environment.
"""

from fluxo.stack.core import Stack, load_env
from fluxo.stack.process import StackError

__all__ = ["Stack", "StackError", "load_env"]
