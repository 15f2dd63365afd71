"""Python steps of the fluxo DAGs (the DAG files only wire these together)."""
