"""Per-stage benchmark: the Glue scripts standardize, curate, aggregate, outliers beside a DuckDB reference.

    .venv/bin/python bench/stages_bench.py                        # 1,000,000 and 5,000,000 records
    .venv/bin/python bench/stages_bench.py --records 200000 1000000
    .venv/bin/python bench/stages_bench.py --load-only            # only the warehouse load, on the last run

Sizes are raw records landed (what the stages read), not generated transactions: a
calibration run measures the s3 share of the generator's output and the day is generated
to match. For each size the generator's s3 shapes (BR CSV + nested JSONL) for one day are
copied into a fresh local lake as raw/s3/ingest_date=D/batch=b1/, then each Glue script runs
as a subprocess (JVM start included: that is what a stage costs) and the same work is done
by DuckDB SQL on the same files (bench-only reference: parse both shapes incl. Brazilian
numbers and São Paulo local times, closed sets, FX, PAN tokenising, dedupe, Parquet; the
metric grains; the three outlier methods with exact quantiles, written as Parquet where the
Glue script MERGEs into Delta). Printed: wall seconds, Spark/DuckDB ratio, microseconds per
record and, per stage, the largest size's cost per record over the smallest's (must be <= 1).

Then the warehouse load: the largest run's merchant_daily rows through `replace_days` (a new
day, then a rerun that replaces every row) against a raw COPY of the same rows into an empty
table of the same definition (with its primary key), as rows/s (goal: ratio >= 0.8). The
services run in .fluxo/stages-bench-services.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from _common import REPO_ROOT, bench_services, rows_per_day_for

from fluxo.contract import CHANNEL_SYNONYMS, METRIC_GRAINS, STATUS_SYNONYMS
from fluxo.lake import Lake

STAGES = ("standardize", "curate", "aggregate", "outliers")
BATCH = "b1"
SALT = "stages-bench"  # development only: the token salt of generated data


# --- the Glue scripts ---------------------------------------------------------------

def spark_env(rows: int) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYSPARK_GATEWAY_PORT", None)
    env.update({
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        "FLUXO_SPARK_MASTER": "local[*]",
        "FLUXO_SPARK_DRIVER_MEMORY": "6g",
        # about 250k rows per shuffle partition; AQE coalesces what turns out smaller
        "FLUXO_SPARK_SHUFFLE_PARTITIONS": str(max(4, rows // 250_000)),
        "FLUXO_TOKEN_SALT": SALT,
    })
    return env


STAGE_ARGS = {"standardize": ["--batch_id", BATCH], "outliers": ["--run_id", "bench"]}


def run_stage(stage: str, lake_root: Path, day: str, records: int, log: Path) -> float:
    argv = [sys.executable, str(REPO_ROOT / "glue_scripts" / f"{stage}.py"), "--JOB_NAME", stage,
            "--lake_root", str(lake_root), "--ingest_date", day, *STAGE_ARGS.get(stage, [])]
    started = time.monotonic()
    with log.open("a") as out:
        proc = subprocess.run(argv, env=spark_env(records), stdout=out, stderr=subprocess.STDOUT)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{stage} failed at {records} records; see {log}")
    return wall


# --- the DuckDB reference -------------------------------------------------------------

def _mapping(name: str, pairs: dict[str, str]) -> str:
    values = ", ".join(f"('{k}', '{v}')" for k, v in pairs.items())
    return f"CREATE TEMP TABLE {name} (raw VARCHAR, canonical VARCHAR); INSERT INTO {name} VALUES {values};"


def duck_standardize(con, raw: Path, out: Path, currency: str = "BRL") -> None:
    con.execute(_mapping("channels", CHANNEL_SYNONYMS))
    con.execute(_mapping("statuses", STATUS_SYNONYMS))
    con.execute(f"CREATE OR REPLACE TEMP TABLE fx AS SELECT * FROM read_csv('{REPO_ROOT}/fluxo/reference/fx_rates.csv')")
    csv = f"""
        SELECT id_transacao AS transaction_id, 's3' AS source,
               try_strptime(data_hora || ' -03:00', '%d/%m/%Y %H:%M:%S %z') AS event_ts,
               cliente AS customer_id, cartao AS card, cartao_final AS last4, estabelecimento AS merchant_id,
               mcc, TRY_CAST(replace(replace(valor, '.', ''), ',', '.') AS DECIMAL(18,2)) AS amount,
               moeda AS currency, pais AS country, canal AS channel, status
        FROM read_csv('{raw}/*.csv', delim=';', header=true, all_varchar=true, quote='"',
                      null_padding=true, ignore_errors=true)"""
    jsonl = f"""
        SELECT id AS transaction_id, 's3' AS source, TRY_CAST(occurred_at AS TIMESTAMPTZ) AS event_ts,
               customer.id AS customer_id, coalesce(card.token, card.number) AS card, card.last4 AS last4,
               merchant.id AS merchant_id, merchant.mcc AS mcc,
               TRY_CAST(CAST(amount.value AS VARCHAR) AS DECIMAL(18,2)) AS amount,
               amount.currency AS currency, merchant.country AS country, channel, status
        FROM read_json('{raw}/*.jsonl', format='newline_delimited', ignore_errors=true, columns={{
            id: 'VARCHAR', occurred_at: 'VARCHAR',
            customer: 'STRUCT(id VARCHAR)', card: 'STRUCT(token VARCHAR, number VARCHAR, last4 VARCHAR)',
            merchant: 'STRUCT(id VARCHAR, mcc VARCHAR, country VARCHAR)',
            amount: 'STRUCT(value VARCHAR, currency VARCHAR)', channel: 'VARCHAR', status: 'VARCHAR'}})"""
    con.execute(f"""
        COPY (
            WITH parsed AS ({csv} UNION ALL BY NAME {jsonl}),
            typed AS (
                SELECT p.transaction_id, p.source, p.event_ts, p.customer_id,
                       CASE WHEN regexp_full_match(p.card, '[0-9]{{13,19}}')
                            THEN 'tok_' || left(sha256('{SALT}' || p.card), 32) ELSE p.card END AS card_token,
                       CASE WHEN regexp_full_match(p.card, '[0-9]{{13,19}}') THEN right(p.card, 4)
                            ELSE nullif(p.last4, '') END AS card_last4,
                       p.merchant_id, p.mcc, p.amount, upper(p.currency) AS currency,
                       CAST(round(p.amount * fx.rate_to_brl, 2) AS DECIMAL(18,2)) AS amount_reporting,
                       upper(p.country) AS country, c.canonical AS channel, s.canonical AS status,
                       '{BATCH}' AS batch_id, now() AS ingested_at
                FROM parsed p
                LEFT JOIN fx ON fx.currency = upper(p.currency)
                LEFT JOIN channels c ON c.raw = lower(trim(p.channel))
                LEFT JOIN statuses s ON s.raw = lower(trim(p.status))
            )
            SELECT * FROM typed
            WHERE transaction_id IS NOT NULL AND event_ts <= now() + INTERVAL 5 MINUTE AND customer_id IS NOT NULL
              AND card_token IS NOT NULL AND merchant_id IS NOT NULL AND regexp_full_match(mcc, '[0-9]{{4}}')
              AND amount > 0 AND amount_reporting IS NOT NULL AND channel IS NOT NULL AND status IS NOT NULL
              AND regexp_full_match(country, '[A-Z]{{2}}')
            QUALIFY row_number() OVER (PARTITION BY transaction_id ORDER BY event_ts, card_token) = 1
        ) TO '{out}' (FORMAT parquet)""")


def duck_curate(con, staged: Path, curated: Path) -> None:
    con.execute(f"""
        COPY (
            SELECT * EXCLUDE (rn), CAST(event_ts AS DATE) AS event_date FROM (
                SELECT *, row_number() OVER (
                    PARTITION BY transaction_id
                    ORDER BY ingested_at, array_position(['api', 'db', 'kafka', 's3'], source), batch_id) AS rn
                FROM read_parquet('{staged}'))
            WHERE rn = 1
        ) TO '{curated}' (FORMAT parquet, PARTITION_BY (event_date), OVERWRITE_OR_IGNORE)""")


def duck_aggregate(con, curated: Path, out: Path) -> None:
    grain_keys = {
        "daily": ["event_date"], "merchant_daily": ["event_date", "merchant_id"], "mcc_daily": ["event_date", "mcc"],
        "country_channel_daily": ["event_date", "country", "channel"], "hourly": ["event_date", "event_hour"],
    }
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW base AS
        SELECT CAST(event_ts AS DATE) AS event_date, date_trunc('hour', event_ts) AS event_hour, *
            EXCLUDE (event_date)
        FROM read_parquet('{curated}/*/*.parquet', hive_partitioning=true)""")
    for grain, keys in grain_keys.items():
        cols = ", ".join(keys)
        extra = (", count(DISTINCT merchant_id) AS distinct_merchants" if grain == "daily" else
                 ", quantile_disc(amount_reporting, [0.5, 0.95, 0.99]) AS percentiles")
        con.execute(f"""
            COPY (
                SELECT {cols}, count(*) AS transaction_count, sum(amount_reporting) AS amount_total,
                       round(avg(amount_reporting), 2) AS amount_avg, min(amount_reporting) AS amount_min,
                       max(amount_reporting) AS amount_max,
                       count(*) FILTER (WHERE status = 'approved') AS approved_count,
                       count(*) FILTER (WHERE status = 'declined') AS declined_count,
                       count(*) FILTER (WHERE status = 'reversed') AS reversed_count,
                       count(*) FILTER (WHERE status = 'approved') / count(*) AS approval_rate,
                       count(DISTINCT customer_id) AS distinct_customers {extra}
                FROM base GROUP BY {cols}
            ) TO '{out}/{grain}.parquet' (FORMAT parquet)""")


def duck_outliers(con, curated: Path, out: Path) -> None:
    """The three methods of fluxo.transforms.outliers (default OutlierParams), exact quantiles."""
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW scored AS
        WITH t AS (SELECT *, ln(CAST(amount AS DOUBLE)) AS x
                   FROM read_parquet('{curated}/*/*.parquet', hive_partitioning=true)),
        q AS (SELECT mcc, currency, quantile_cont(x, [0.25, 0.5, 0.75]) AS qs FROM t
              GROUP BY ALL HAVING count(*) >= 30),
        g AS (SELECT q.mcc, q.currency, qs[1] AS q1, qs[2] AS med, qs[3] AS q3,
                     median(abs(t.x - qs[2])) AS mad, avg(abs(t.x - qs[2])) AS mean_ad
              FROM t JOIN q USING (mcc, currency) GROUP BY ALL),
        c AS (SELECT customer_id, count(*) AS history_rows, median(CAST(amount_reporting AS DOUBLE)) AS cmed
              FROM t GROUP BY ALL HAVING count(*) >= 10 AND median(CAST(amount_reporting AS DOUBLE)) > 0),
        s AS (SELECT t.*, g.*, c.history_rows, c.cmed,
                     (t.x - g.med) / CASE WHEN g.mad > 0 THEN g.mad / 0.6745 ELSE g.mean_ad * 1.253314 END AS z,
                     CASE WHEN g.q3 > g.q1 THEN CASE WHEN t.x > g.q3 THEN (t.x - g.q3) / (g.q3 - g.q1)
                                                     WHEN t.x < g.q1 THEN (t.x - g.q1) / (g.q3 - g.q1) ELSE 0 END
                     END AS iqr_score,
                     CAST(t.amount_reporting AS DOUBLE) / c.cmed AS ratio
              FROM t LEFT JOIN g USING (mcc, currency) LEFT JOIN c USING (customer_id))
        SELECT transaction_id, event_date, mcc, amount_reporting, 'mad_zscore' AS method, z AS score FROM s
            WHERE abs(z) > 3.5
        UNION ALL SELECT transaction_id, event_date, mcc, amount_reporting, 'iqr_fence', iqr_score FROM s
            WHERE abs(iqr_score) > 3
        UNION ALL SELECT transaction_id, event_date, mcc, amount_reporting, 'customer_history', ratio FROM s
            WHERE ratio >= 50""")
    con.execute(f"COPY (SELECT * FROM scored) TO '{out}/outliers.parquet' (FORMAT parquet)")
    con.execute(f"""
        COPY (SELECT event_date, method, mcc, count(*) AS outlier_count, max(abs(score)) AS max_score,
                     sum(amount_reporting) AS amount_reporting_total
              FROM read_parquet('{out}/outliers.parquet') GROUP BY ALL
        ) TO '{out}/outlier_summary.parquet' (FORMAT parquet)""")


def run_duckdb(raw: Path, work: Path) -> dict[str, float]:
    import duckdb

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    times = {}
    steps = (
        ("standardize", lambda: duck_standardize(con, raw, work / "staged.parquet")),
        ("curate", lambda: duck_curate(con, work / "staged.parquet", work / "curated")),
        ("aggregate", lambda: duck_aggregate(con, work / "curated", work)),
        ("outliers", lambda: duck_outliers(con, work / "curated", work)),
    )
    for stage, step in steps:
        started = time.monotonic()
        step()
        times[stage] = time.monotonic() - started
    return times


# --- one size -----------------------------------------------------------------------------

def bench_size(home: Path, target: int, day: date, seed: int) -> dict:
    from fluxo_dev.generator import generate

    generated = home / f"generated-{target}"
    shutil.rmtree(generated, ignore_errors=True)
    rows_per_day = rows_per_day_for(target, "s3", home, day, seed, token_salt=SALT)
    started = time.monotonic()
    manifest = generate(generated, day, days=1, rows_per_day=rows_per_day, seed=seed, sources=("s3",),
                        token_salt=SALT)
    records = manifest["records"]
    print(f"    generated {records:,} s3 records in {time.monotonic() - started:.0f} s", flush=True)
    lake_root = home / f"lake-{target}"
    shutil.rmtree(lake_root, ignore_errors=True)
    raw = Path(Lake(str(lake_root)).raw("s3", day.isoformat(), BATCH))
    raw.mkdir(parents=True)
    for f in (generated / "s3" / f"dt={day.isoformat()}").iterdir():
        shutil.copy2(f, raw / f.name)
    log = home / f"stages-{target}.log"
    log.unlink(missing_ok=True)
    spark = {}
    for stage in STAGES:
        spark[stage] = run_stage(stage, lake_root, day.isoformat(), records, log)
        print(f"    spark {stage}: {spark[stage]:.1f} s", flush=True)
    duck = run_duckdb(raw, home / f"duckdb-{target}")
    print(f"    duckdb: {', '.join(f'{k} {v:.2f} s' for k, v in duck.items())}", flush=True)
    (home / "last-lake").write_text(str(lake_root))
    return {"records": records, "spark": spark, "duckdb": duck, "lake_root": lake_root}


# --- warehouse load -----------------------------------------------------------------------

def bench_load(database_url: str, lake_root: Path, day: date, repeats: int = 3) -> dict:
    import psycopg
    from psycopg import sql

    from fluxo_platform import lakefs
    from fluxo_platform.warehouse import migrate, replace_days
    from fluxo_platform.warehouse.load import copy_into, with_constants

    migrate(database_url)
    contract, table = METRIC_GRAINS["merchant_daily"]
    rows = lakefs.read_parquet(Lake(str(lake_root)).metrics("merchant_daily", day.isoformat())).select(contract.names)
    with_run = with_constants(rows, {"run_id": "bench"})
    parent = sql.Identifier("metrics", table)
    plain = sql.Identifier("metrics", "_bench_raw_copy")
    key = sql.SQL(", ").join(sql.Identifier(k) for k in contract.key)
    cases = ("raw COPY", "replace_days (new day)", "replace_days (rerun)")
    best = dict.fromkeys(cases, float("inf"))
    days = rows.column("event_date").unique().to_pylist()

    def timed(case, work):
        started = time.monotonic()
        work()
        best[case] = min(best[case], time.monotonic() - started)

    with psycopg.connect(database_url, autocommit=True) as conn:
        for _ in range(repeats):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(plain))
            conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS, PRIMARY KEY ({}))").format(
                plain, parent, key))

            def raw_copy():
                with conn.transaction():
                    copy_into(conn, plain, with_run)

            timed("raw COPY", raw_copy)
            replace_days(conn, "metrics", table, rows.slice(0, 0), days=days)  # the day starts empty
            load = lambda: replace_days(conn, "metrics", table, rows, "event_date", {"run_id": "bench"})  # noqa: E731
            timed("replace_days (new day)", load)
            timed("replace_days (rerun)", load)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(plain))
        replace_days(conn, "metrics", table, rows.slice(0, 0), days=days)
    return {"rows": rows.num_rows, **{k: rows.num_rows / v for k, v in best.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--day", type=date.fromisoformat, default=date(2026, 11, 20))
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--load-only", action="store_true", help="only the warehouse load, on the last run's metrics")
    args = parser.parse_args()

    home = REPO_ROOT / ".fluxo" / "stages-bench"
    home.mkdir(parents=True, exist_ok=True)
    results = []
    for target in [] if args.load_only else sorted(args.records):
        print(f"... {target:,} records", flush=True)
        results.append(bench_size(home, target, args.day, args.seed))

    def seconds(result: dict, engine: str, stage: str) -> float:
        return sum(result[engine].values()) if stage == "all" else result[engine][stage]

    if results:
        print(f"\n{'records':>10} {'stage':<12} {'spark s':>8} {'duckdb s':>9} {'ratio':>7} {'spark us/rec':>13}")
    for r in results:
        for stage in (*STAGES, "all"):
            s, d = seconds(r, "spark", stage), seconds(r, "duckdb", stage)
            print(f"{r['records']:>10,} {stage:<12} {s:>8.1f} {d:>9.2f} {s / d:>7.1f} {s / r['records'] * 1e6:>13.2f}")
    if len(results) > 1:
        small, large = results[0], results[-1]
        print(f"\ncost per record at {large['records']:,} / at {small['records']:,} (must be <= 1):")
        for stage in (*STAGES, "all"):
            per_record = [seconds(r, "spark", stage) / r["records"] for r in (small, large)]
            print(f"  {stage:<12} {per_record[1] / per_record[0]:.2f}")

    lake_root = results[-1]["lake_root"] if results else Path((home / "last-lake").read_text())
    with bench_services("stages-bench-services"):
        load = bench_load(os.environ["FLUXO_DATABASE_URL"], lake_root, args.day)
    print(f"\nwarehouse load of {load['rows']:,} merchant_daily rows (best of 3), goal >= 0.8 of raw COPY:")
    for case in ("raw COPY", "replace_days (new day)", "replace_days (rerun)"):
        print(f"  {case:<24} {load[case]:>10,.0f} rows/s  ratio {load[case] / load['raw COPY']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
