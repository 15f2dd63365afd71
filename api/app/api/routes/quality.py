"""Great Expectations results per run (quality.expectation_results; scope quality:read)."""

from fastapi import APIRouter

from app.api.lists import add_list_route
from app.resources import QUALITY

router = APIRouter()
add_list_route(router, QUALITY)
