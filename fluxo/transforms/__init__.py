"""The Glue stages as pure Spark DataFrame functions (the scripts in glue_scripts/ only do I/O).

- `standardize`: raw lines -> mappers per source shape (`map_s3_csv`, `map_s3_jsonl`) ->
  `standardize(candidates, fx_rates, ...)` -> staged canonical rows + quarantine.
- `curate`: `merge(staged, existing)` keeps one row per transaction_id (rule in its docstring).
- `aggregate`: `daily_metrics(curated, reporting_currency)` -> DAILY_METRICS rows.
"""
