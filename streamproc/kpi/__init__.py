"""The KPI engine's pure core: records, contributions, windows and formulas (stdlib + msgspec)."""
