from fastapi import APIRouter

from app.api.routes import auth, dashboard, fraud, health, metrics, odata, outliers, quality, runs, transactions

api_router = APIRouter()
for module in (auth, metrics, transactions, quality, runs, outliers, fraud, odata, health, dashboard):
    api_router.include_router(module.router)
