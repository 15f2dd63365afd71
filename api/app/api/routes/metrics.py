"""Transaction metrics from the warehouse: the daily totals, the finer grains of METRIC_GRAINS
and the outlier summary (scope metrics:read), each as JSON or CSV."""

from fastapi import APIRouter

from app.api.lists import add_list_route
from app.resources import METRICS

router = APIRouter()
for entity in METRICS:
    add_list_route(router, entity)
