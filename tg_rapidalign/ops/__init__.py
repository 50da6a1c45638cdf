"""Low-level pair-sum machinery shared by the losses."""
