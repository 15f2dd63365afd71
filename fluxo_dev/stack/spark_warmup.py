"""Warm the stack's Spark Connect server up once, right after it starts, in the background.

A JVM just started loads classes and compiles its hot paths during its first queries: on a
server just started the standardize stage of a 20k day took 13.5-14.4 s, its second run 5.2-6.0 s;
after this workload (14.9-15.4 s alone, off the first DAG run's path while the stack and the run
set up) the first one took 7.5-7.9 s (three servers each way, 1-minute load 2.1-2.9). It touches the same machinery as the stages, on a few hundred rows
in a temporary folder it removes: text files split and cast, JSON parsed, hashes and regular
expressions, window functions, an aggregation with percentiles and distinct counts, Parquet
written and read, a broadcast join, and a Delta table created, MERGEd (update, insert and
delete clauses), read by version and asked for its history.

    python -m fluxo_dev.stack.spark_warmup sc://127.0.0.1:PORT

Best effort: a failure is printed to the warm-up's log and changes nothing else.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

ROWS = 300
TIMEOUT_S = 300


def _write_samples(folder: Path) -> None:
    lines = ["id;amount;event_time;country"]
    lines += [f"{i};{i},{i % 100:02d};2026-11-2{i % 9} 10:{i % 60:02d}:00;BR" for i in range(ROWS)]
    (folder / "sample.csv").write_text("\n".join(lines) + "\n")
    documents = [{"id": str(i), "amount": i * 1.5, "event_time": "2026-11-20T10:00:00+00:00",
                  "card": {"last4": f"{i % 10000:04d}"}} for i in range(ROWS)]
    (folder / "sample.json").write_text("".join(json.dumps(d) + "\n" for d in documents))


def warm_up(url: str) -> float:
    """Run the workload on the Spark Connect server at `url`; its seconds."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from fluxo.spark import remote_session

    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="fluxo-spark-warmup-"))
    print(f"warming the Spark server up, working in {folder}", flush=True)
    spark = remote_session(url)
    try:
        _write_samples(folder)
        fields = F.split("value", ";")
        csv = (spark.read.text(str(folder / "sample.csv")).where(~F.col("value").startswith("id;"))
               .select(fields[0].alias("id"),
                       F.regexp_replace(fields[1], ",", ".").try_cast("decimal(18,2)").alias("amount"),
                       F.to_timestamp(fields[2], "yyyy-MM-dd HH:mm:ss").alias("event_time"),
                       fields[3].alias("country")))
        documents = spark.read.text(str(folder / "sample.json")).select(
            F.from_json("value", "id string, amount double, event_time string, card struct<last4: string>").alias("d"))
        jsons = documents.select(F.col("d.id").alias("id"), F.col("d.amount").cast("decimal(18,2)").alias("amount"),
                                 F.to_timestamp("d.event_time").alias("event_time"), F.lit("BR").alias("country"))
        rows = (csv.unionByName(jsons)
                .withColumn("digest", F.sha2(F.col("id"), 256))
                .withColumn("well_formed", F.col("id").rlike("^[0-9]+$"))
                .withColumn("copy", F.row_number().over(Window.partitionBy("id").orderBy("event_time")))
                .withColumn("running_max", F.max("amount").over(
                    Window.partitionBy("country").orderBy("event_time").rangeBetween(Window.unboundedPreceding, 0))))
        rows.groupBy("country").agg(F.count("*"), F.sum("amount"), F.percentile_approx("amount", 0.5),
                                    F.count_distinct("id")).collect()
        rows.write.mode("overwrite").parquet(str(folder / "parquet"))
        staged = spark.read.parquet(str(folder / "parquet")).withColumn("event_date", F.to_date("event_time"))
        staged.join(F.broadcast(staged.select("id").distinct()), "id").count()
        table = str(folder / "delta")
        staged.write.format("delta").partitionBy("event_date").save(table)
        view = f"fluxo_warmup_{int(time.time() * 1000)}"
        staged.createOrReplaceTempView(view)
        spark.sql(f"MERGE INTO delta.`{table}` AS target USING {view} AS source "
                  "ON target.id = source.id AND target.copy = source.copy "
                  "WHEN MATCHED AND source.amount > target.amount THEN UPDATE SET * "
                  "WHEN NOT MATCHED THEN INSERT * "
                  "WHEN NOT MATCHED BY SOURCE AND target.event_date IN (DATE '2026-11-20') THEN DELETE").collect()
        spark.read.format("delta").option("versionAsOf", 0).load(table).where(
            F.col("event_date").isin(["2026-11-20"])).count()
        spark.sql(f"DESCRIBE HISTORY delta.`{table}`").collect()
        spark.catalog.dropTempView(view)
    finally:
        spark.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return time.perf_counter() - started


def _give_up(signum, frame) -> None:
    raise SystemExit(f"spark warm-up stopped by signal {signum} (its server went away, or it ran {TIMEOUT_S} s)")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    # a client whose server is gone retries for minutes: the stack's stop sends SIGTERM, and the alarm
    # bounds the rest; either way the temporary folder is removed on the way out
    signal.signal(signal.SIGTERM, _give_up)
    signal.signal(signal.SIGALRM, _give_up)
    signal.alarm(TIMEOUT_S)
    try:
        seconds = warm_up(argv[1])
    except Exception as exc:  # noqa: BLE001 - best effort: the stages warm the server up themselves
        print(f"spark warm-up failed, nothing else is affected: {type(exc).__name__}: {exc}", flush=True)
        return 1
    print(f"spark warm-up done in {seconds:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
