"""The quality gate: Great Expectations suites (data in `expectations/`) run over staged transactions."""

from fluxo.quality.gate import QualityGateFailed, QualityReport, describe_failure, import_gx_in_background, validate
from fluxo.quality.suites import DEFAULT_SUITES, build_contract_suite, build_suites, load_suites

__all__ = [
    "DEFAULT_SUITES",
    "QualityGateFailed",
    "QualityReport",
    "build_contract_suite",
    "build_suites",
    "describe_failure",
    "import_gx_in_background",
    "load_suites",
    "validate",
]
