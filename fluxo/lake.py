"""Where each zone lives under the lake root (a local path or s3:// URI).

Glue scripts receive the lake root as an argument and build every path here,
so local runs and AWS Glue share one layout.
"""

from __future__ import annotations

from dataclasses import dataclass

DATA_DOCS = "data_docs"


@dataclass(frozen=True)
class Lake:
    root: str

    def _join(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *[p.strip("/") for p in parts if p]])

    def raw(self, source: str, ingest_date: str, batch_id: str = "") -> str:
        batch = f"batch={batch_id}" if batch_id else ""
        return self._join("raw", source, f"ingest_date={ingest_date}", batch)

    def incoming(self, source: str, batch_id: str) -> str:
        """Where a batch is written before it is published to the raw zone (readers never look here)."""
        return self._join("raw", "_incoming", source, f"batch={batch_id}")

    def quarantine(self, ingest_date: str, stage: str = "") -> str:
        return self._join("quarantine", f"ingest_date={ingest_date}", f"stage={stage}" if stage else "")

    def staged(self, ingest_date: str) -> str:
        """Standardized rows of one run, waiting for the quality gate."""
        return self._join("work", "standardized", f"ingest_date={ingest_date}")

    def stats(self, ingest_date: str, stage: str) -> str:
        """The results document a stage writes for its ingest date (read back by the Airflow operator)."""
        return self._join("work", "stats", f"ingest_date={ingest_date}", f"{stage}.json")

    def stage_inputs(self, ingest_date: str, stage: str) -> str:
        """What a stage's last successful run for the ingest date read (the operator's rerun check)."""
        return self._join("work", "inputs", f"ingest_date={ingest_date}", f"{stage}.json")

    def work(self, *parts: str) -> str:
        return self._join("work", *parts)

    @property
    def curated_transactions(self) -> str:
        return self._join("curated", "transactions")

    def metrics(self, name: str, ingest_date: str) -> str:
        return self._join("work", "metrics", name, f"ingest_date={ingest_date}")

    @property
    def outlier_history(self) -> str:
        return self._join("history", "outliers")

    @property
    def fraud_alerts(self) -> str:
        """The Delta history of fraud alerts (fluxo.contract.FRAUD_ALERT), next to the outliers."""
        return self._join("history", "fraud_alerts")

    @property
    def delta_tables(self) -> dict[str, str]:
        """Every Delta table of the lake, by name (what lake maintenance compacts and vacuums)."""
        return {"curated_transactions": self.curated_transactions, "outlier_history": self.outlier_history,
                "fraud_alerts": self.fraud_alerts}

    def quality(self, ingest_date: str) -> str:
        return self._join("quality", f"ingest_date={ingest_date}")

    @property
    def quality_root(self) -> str:
        return self._join("quality")

    @property
    def data_docs(self) -> str:
        return self._join("quality", DATA_DOCS)
