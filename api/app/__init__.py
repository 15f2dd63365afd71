"""fluxo query API: daily transaction metrics from the warehouse, behind OAuth2 client credentials."""
