"""API consumption: usage reported by providers and counted at introspection, the daily
seal, and the consumption pages and charts. Sits above tokens (it counts their use)."""
