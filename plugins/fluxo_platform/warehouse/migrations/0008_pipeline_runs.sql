-- The run audit keeps one row per run attempt and never overwrites one: a backfill or a cleared
-- run that reuses a run id adds a row (attempt = Airflow's clear_number) instead of replacing
-- the earlier record. Each row says who or what triggered the run, with which conf, each stage's
-- rows and duration, the quality summary, the fraud alert count and the first error.
ALTER TABLE audit.pipeline_runs DROP CONSTRAINT pipeline_runs_pkey;
ALTER TABLE audit.pipeline_runs ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY;
ALTER TABLE audit.pipeline_runs
    ADD COLUMN attempt         integer NOT NULL DEFAULT 0,
    ADD COLUMN run_type        text,
    ADD COLUMN triggered_by    text,
    ADD COLUMN triggering_user text,
    ADD COLUMN conf            jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN logical_date    timestamptz,
    ADD COLUMN stages          jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN quality         jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN fraud_alerts    bigint,
    ADD COLUMN error_task      text,
    ADD COLUMN error_message   text;
CREATE INDEX pipeline_runs_run_id ON audit.pipeline_runs (dag_id, run_id, attempt);

-- One transactions_etl run processes at a time, whatever its type (scheduled, manual, backfill):
-- Airflow counts backfill runs apart from max_active_runs, so runs take this slot first.
CREATE TABLE audit.run_lock (
    dag_id      text PRIMARY KEY,
    run_id      text NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now()
);
