"""fluxo: a transactions ETL platform (Airflow -> Glue/PySpark -> GX -> lake/warehouse -> API)."""

__version__ = "0.1.0"
