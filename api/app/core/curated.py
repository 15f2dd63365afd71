"""The curated zone's transactions, read without Spark (delta-rs), local or on S3.

The zone is a Delta table partitioned by event_date (`make upgrade-lake` converts a lake of the
earlier Parquet layout). A `day` hint prunes the scan to one partition.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from fluxo.lake import Lake
from fluxo_platform.lakefs import open_delta


def find_transaction(lake_root: str, transaction_id: str, day: date | None = None) -> dict[str, Any] | None:
    """The curated row of one transaction (with its event_date), or None."""
    table = open_delta(Lake(lake_root).curated_transactions)
    if table is None:
        return None
    condition = ds.field("transaction_id") == transaction_id
    if day is not None:
        condition = condition & (ds.field("event_date") == pa.scalar(day, pa.date32()))
    found = table.to_pyarrow_dataset().to_table(filter=condition)
    if found.num_rows == 0:
        return None
    return found.slice(0, 1).to_pylist()[0]
