"""One dynamic partition per landed batch, added by ``landing_sensor``."""

import dagster as dg

BATCHES = "batches"
batches = dg.DynamicPartitionsDefinition(name=BATCHES)
