-- Metrics at finer grains. Columns must match fluxo.contract (MERCHANT_DAILY_METRICS,
-- MCC_DAILY_METRICS, COUNTRY_CHANNEL_DAILY_METRICS, HOURLY_METRICS; checked by
-- tests/test_metrics_load.py). Primary keys are the contracts' natural keys; every
-- table carries event_date so a rerun swaps a whole day in one transaction.

-- The measures every grain shares, copied into each table by LIKE (dropped at the end).
CREATE TEMP TABLE grain_measures (
    transaction_count   bigint NOT NULL,
    amount_total        numeric(18,2) NOT NULL,
    amount_avg          numeric(18,2) NOT NULL,
    amount_min          numeric(18,2) NOT NULL,
    amount_max          numeric(18,2) NOT NULL,
    amount_p50          numeric(18,2) NOT NULL,
    amount_p95          numeric(18,2) NOT NULL,
    amount_p99          numeric(18,2) NOT NULL,
    approved_count      bigint NOT NULL,
    declined_count      bigint NOT NULL,
    reversed_count      bigint NOT NULL,
    approval_rate       double precision NOT NULL,
    distinct_customers  bigint NOT NULL,
    reporting_currency  text NOT NULL,
    run_id              text NOT NULL,
    loaded_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE metrics.merchant_daily (
    event_date  date NOT NULL,
    merchant_id text NOT NULL,
    LIKE grain_measures INCLUDING DEFAULTS,
    PRIMARY KEY (event_date, merchant_id)
);

CREATE TABLE metrics.mcc_daily (
    event_date  date NOT NULL,
    mcc         text NOT NULL,
    LIKE grain_measures INCLUDING DEFAULTS,
    PRIMARY KEY (event_date, mcc)
);

CREATE TABLE metrics.country_channel_daily (
    event_date  date NOT NULL,
    country     text NOT NULL,
    channel     text NOT NULL,
    LIKE grain_measures INCLUDING DEFAULTS,
    PRIMARY KEY (event_date, country, channel)
);

CREATE TABLE metrics.hourly_transactions (
    event_date  date NOT NULL,
    event_hour  timestamptz NOT NULL,
    LIKE grain_measures INCLUDING DEFAULTS,
    PRIMARY KEY (event_date, event_hour)
);

DROP TABLE grain_measures;

-- BI views: the facts without load lineage (run_id).
CREATE VIEW mart.merchant_daily AS
    SELECT event_date, merchant_id, transaction_count, amount_total, amount_avg, amount_min, amount_max,
           amount_p50, amount_p95, amount_p99, approved_count, declined_count, reversed_count,
           approval_rate, distinct_customers, reporting_currency, loaded_at
    FROM metrics.merchant_daily;

CREATE VIEW mart.mcc_daily AS
    SELECT event_date, mcc, transaction_count, amount_total, amount_avg, amount_min, amount_max,
           amount_p50, amount_p95, amount_p99, approved_count, declined_count, reversed_count,
           approval_rate, distinct_customers, reporting_currency, loaded_at
    FROM metrics.mcc_daily;

CREATE VIEW mart.country_channel_daily AS
    SELECT event_date, country, channel, transaction_count, amount_total, amount_avg, amount_min, amount_max,
           amount_p50, amount_p95, amount_p99, approved_count, declined_count, reversed_count,
           approval_rate, distinct_customers, reporting_currency, loaded_at
    FROM metrics.country_channel_daily;

CREATE VIEW mart.hourly_transactions AS
    SELECT event_date, event_hour, transaction_count, amount_total, amount_avg, amount_min, amount_max,
           amount_p50, amount_p95, amount_p99, approved_count, declined_count, reversed_count,
           approval_rate, distinct_customers, reporting_currency, loaded_at
    FROM metrics.hourly_transactions;
