"""Everything of the dataset group, as one ``Definitions`` object."""

import dagster as dg

from cv_assets.defs.dataset.assets import training_dataset

defs = dg.Definitions(assets=[training_dataset])
