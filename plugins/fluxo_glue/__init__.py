"""Airflow-side runner of the Glue stages (plugins/ is on sys.path for DAGs)."""

from fluxo_glue.operator import FluxoGlueJobOperator

__all__ = ["FluxoGlueJobOperator"]
