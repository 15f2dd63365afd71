-- Fraud alerts (fluxo.contract.FRAUD_ALERT, written by the fraud stage; rules in
-- expectations/fraud_rules.json): one row per transaction at least one rule flagged, with the rules
-- that fired, the score and every feature as evidence. Day-partitioned like the metric facts, so a
-- load swaps whole event days (fluxo_platform.warehouse.load.replace_days). A card token, never a PAN.
CREATE TABLE metrics.fraud_alerts (
    event_date              date NOT NULL,
    transaction_id          text NOT NULL,
    event_ts                timestamptz NOT NULL,
    customer_id             text NOT NULL,
    card_token              text NOT NULL,
    merchant_id             text NOT NULL,
    mcc                     text NOT NULL,
    country                 text NOT NULL,
    channel                 text NOT NULL,
    status                  text NOT NULL,
    amount                  numeric(18,2) NOT NULL,
    currency                text NOT NULL,
    amount_reporting        numeric(18,2) NOT NULL,
    rules                   text NOT NULL,
    rule_count              bigint NOT NULL,
    score                   double precision NOT NULL,
    severity                text NOT NULL,
    txns_10min              bigint NOT NULL,
    txns_1h                 bigint NOT NULL,
    merchants_10min         bigint NOT NULL,
    merchants_1h            bigint NOT NULL,
    customer_history_txns   bigint,
    customer_median         double precision,
    amount_to_median        double precision,
    card_present_history    bigint,
    usual_country           text,
    prior_country_txns      bigint,
    prev_country            text,
    travel_minutes          double precision,
    min_travel_minutes      double precision,
    travel_time_ratio       double precision,
    small_declines_before   bigint,
    duplicate_charges       bigint,
    local_hour              bigint,
    night_high_risk_amount  numeric(18,2),
    detected_at             timestamptz NOT NULL,
    run_id                  text NOT NULL,
    loaded_at               timestamptz NOT NULL DEFAULT now(),
    CHECK (severity IN ('critical', 'warning')),
    CHECK (score > 0 AND score <= 1),
    PRIMARY KEY (event_date, transaction_id)
) PARTITION BY LIST (event_date);

CREATE INDEX fraud_alerts_score ON metrics.fraud_alerts (event_date, score DESC);

CREATE VIEW mart.fraud_alerts AS
    SELECT event_date, transaction_id, event_ts, customer_id, card_token, merchant_id, mcc, country, channel,
           status, amount, currency, amount_reporting, rules, rule_count, score, severity, detected_at, loaded_at
    FROM metrics.fraud_alerts;

-- The fraud-flag measures of every metric grain (aggregate counts the alerts per group).
ALTER TABLE metrics.daily_transactions ADD COLUMN fraud_alert_count bigint, ADD COLUMN fraud_alert_rate double precision;
ALTER TABLE metrics.merchant_daily ADD COLUMN fraud_alert_count bigint, ADD COLUMN fraud_alert_rate double precision;
ALTER TABLE metrics.mcc_daily ADD COLUMN fraud_alert_count bigint, ADD COLUMN fraud_alert_rate double precision;
ALTER TABLE metrics.country_channel_daily ADD COLUMN fraud_alert_count bigint, ADD COLUMN fraud_alert_rate double precision;
ALTER TABLE metrics.hourly_transactions ADD COLUMN fraud_alert_count bigint, ADD COLUMN fraud_alert_rate double precision;

CREATE OR REPLACE VIEW mart.daily_transactions AS
    SELECT event_date, transaction_count, amount_total, amount_avg, amount_min, amount_max,
           approved_count, declined_count, reversed_count, approval_rate,
           distinct_customers, distinct_merchants, reporting_currency, loaded_at, fraud_alert_count, fraud_alert_rate
    FROM metrics.daily_transactions;

CREATE OR REPLACE VIEW mart.merchant_daily AS
    SELECT event_date, merchant_id, transaction_count, amount_total, amount_avg, amount_min, amount_max,
           amount_p50, amount_p95, amount_p99, approved_count, declined_count, reversed_count,
           approval_rate, distinct_customers, reporting_currency, loaded_at, fraud_alert_count, fraud_alert_rate
    FROM metrics.merchant_daily;

CREATE OR REPLACE VIEW mart.mcc_daily AS
    SELECT event_date, mcc, transaction_count, amount_total, amount_avg, amount_min, amount_max,
           amount_p50, amount_p95, amount_p99, approved_count, declined_count, reversed_count,
           approval_rate, distinct_customers, reporting_currency, loaded_at, fraud_alert_count, fraud_alert_rate
    FROM metrics.mcc_daily;

CREATE OR REPLACE VIEW mart.country_channel_daily AS
    SELECT event_date, country, channel, transaction_count, amount_total, amount_avg, amount_min, amount_max,
           amount_p50, amount_p95, amount_p99, approved_count, declined_count, reversed_count,
           approval_rate, distinct_customers, reporting_currency, loaded_at, fraud_alert_count, fraud_alert_rate
    FROM metrics.country_channel_daily;

CREATE OR REPLACE VIEW mart.hourly_transactions AS
    SELECT event_date, event_hour, transaction_count, amount_total, amount_avg, amount_min, amount_max,
           amount_p50, amount_p95, amount_p99, approved_count, declined_count, reversed_count,
           approval_rate, distinct_customers, reporting_currency, loaded_at, fraud_alert_count, fraud_alert_rate
    FROM metrics.hourly_transactions;
