"""Everything of the monitoring group, as one ``Definitions`` object."""

import dagster as dg

from cv_assets.defs.monitoring.assets import drift_report
from cv_assets.defs.monitoring.jobs import drift_job

defs = dg.Definitions(assets=[drift_report], jobs=[drift_job])
