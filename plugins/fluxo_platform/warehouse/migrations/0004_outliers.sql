-- Outlier summary per event day, detector and merchant category (fluxo.history.OUTLIER_SUMMARY;
-- the per-transaction history itself lives in the Delta table history/outliers).
CREATE TABLE metrics.outlier_summary (
    event_date              date NOT NULL,
    method                  text NOT NULL CHECK (method IN ('mad_zscore', 'iqr_fence', 'customer_history')),
    mcc                     text NOT NULL,
    outlier_count           bigint NOT NULL CHECK (outlier_count > 0),
    max_score               double precision NOT NULL,
    amount_reporting_total  numeric(18,2) NOT NULL,
    run_id                  text NOT NULL,
    loaded_at               timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_date, method, mcc)
);

CREATE VIEW mart.outlier_summary AS
    SELECT event_date, method, mcc, outlier_count, max_score, amount_reporting_total, loaded_at
    FROM metrics.outlier_summary;
