"""One writer of the commit race in tests/test_lake_delta.py (run as a script, one JVM each).

    python tests/delta_commit_race.py TABLE WORKER ROUNDS BARRIER_DIR

Both writers open a transaction on the same snapshot, spin to a shared instant (a deadline file
worker 0 writes each round) and commit a metadata-only change tagged `w<worker>-r<round>`;
each records the version Delta told it it committed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(table: str, worker: int, rounds: int, barrier: Path) -> None:
    from fluxo.spark import local_session

    spark = local_session(f"race-{worker}", s3=True, extra={"spark.master": "local[1]", "spark.driver.memory": "768m"})
    jvm = spark.sparkContext._jvm
    if worker == 0:
        spark.range(1).write.format("delta").save(table)
        (barrier / "created").touch()
    while not (barrier / "created").exists():
        time.sleep(0.01)
    manual = jvm.py4j.reflection.ReflectionUtil.classForName(
        "org.apache.spark.sql.delta.DeltaOperations$ManualUpdate$").getField("MODULE$").get(None)
    nothing = jvm.scala.jdk.javaapi.CollectionConverters.asScala(jvm.java.util.ArrayList()).toSeq()
    log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, table)
    (barrier / f"ready_{worker}").touch()
    with open(barrier / f"w{worker}.jsonl", "a") as out:
        for r in range(rounds):
            if worker == 0:
                while not (barrier / "ready_1").exists():
                    time.sleep(0.01)
                (barrier / f".deadline_{r}").write_text(str(time.time() + 0.8))
                (barrier / f".deadline_{r}").rename(barrier / f"deadline_{r}")
            while not (barrier / f"deadline_{r}").exists():
                time.sleep(0.002)
            deadline = float((barrier / f"deadline_{r}").read_text())
            marker = f"w{worker}-r{r}"
            spark.conf.set("spark.databricks.delta.commitInfo.userMetadata", marker)
            transaction = log.startTransaction()
            while time.time() < deadline:
                pass
            version = transaction.commit(nothing, manual)
            out.write(json.dumps({"marker": marker, "version": version}) + "\n")
            out.flush()
            (barrier / f"done_{worker}_{r}").touch()
            while not (barrier / f"done_{1 - worker}_{r}").exists():
                time.sleep(0.002)
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
