-- Warehouse schemas: metrics facts, quality results, audit trail, BI marts.
CREATE SCHEMA IF NOT EXISTS metrics;
CREATE SCHEMA IF NOT EXISTS quality;
CREATE SCHEMA IF NOT EXISTS audit;
CREATE SCHEMA IF NOT EXISTS mart;

-- Columns must match fluxo.contract.DAILY_METRICS (checked by tests/test_warehouse.py).
CREATE TABLE metrics.daily_transactions (
    event_date          date PRIMARY KEY,
    transaction_count   bigint NOT NULL,
    amount_total        numeric(18,2) NOT NULL,
    amount_avg          numeric(18,2) NOT NULL,
    amount_min          numeric(18,2) NOT NULL,
    amount_max          numeric(18,2) NOT NULL,
    approved_count      bigint NOT NULL,
    declined_count      bigint NOT NULL,
    reversed_count      bigint NOT NULL,
    approval_rate       double precision NOT NULL,
    distinct_customers  bigint NOT NULL,
    distinct_merchants  bigint NOT NULL,
    reporting_currency  text NOT NULL,
    run_id              text NOT NULL,
    loaded_at           timestamptz NOT NULL DEFAULT now()
);

-- One row per expectation per validation run.
CREATE TABLE quality.expectation_results (
    run_id          text NOT NULL,
    ingest_date     date NOT NULL,
    suite           text NOT NULL,
    expectation     text NOT NULL,
    column_name     text,
    severity        text NOT NULL CHECK (severity IN ('critical', 'warning')),
    success         boolean NOT NULL,
    unexpected_count bigint,
    element_count   bigint,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, suite, expectation, column_name)
);

-- One row per pipeline run (per logical date), updated as stages finish.
CREATE TABLE audit.pipeline_runs (
    run_id          text PRIMARY KEY,
    dag_id          text NOT NULL,
    ingest_date     date NOT NULL,
    state           text NOT NULL,
    counts          jsonb NOT NULL DEFAULT '{}'::jsonb,
    message         text,
    started_at      timestamptz,
    finished_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pipeline_runs_ingest_date ON audit.pipeline_runs (ingest_date);

-- Every API request, granted or refused.
CREATE TABLE audit.api_access (
    id              bigserial PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    principal       text,
    method          text NOT NULL,
    path            text NOT NULL,
    query           text,
    status_code     integer NOT NULL,
    client_ip       text,
    duration_ms     double precision,
    detail          text
);
CREATE INDEX api_access_at ON audit.api_access (at);

CREATE VIEW mart.daily_transactions AS
    SELECT event_date, transaction_count, amount_total, amount_avg, amount_min, amount_max,
           approved_count, declined_count, reversed_count, approval_rate,
           distinct_customers, distinct_merchants, reporting_currency, loaded_at
    FROM metrics.daily_transactions;
