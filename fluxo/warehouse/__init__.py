"""The PostgreSQL warehouse: versioned migrations, COPY-based loads, the audit trail."""

from fluxo.warehouse.load import replace_days
from fluxo.warehouse.migrate import migrate

__all__ = ["migrate", "replace_days"]
