"""Everything of the mobile group, as one ``Definitions`` object."""

import dagster as dg

from cv_assets.defs.mobile.assets import mobile_model

defs = dg.Definitions(assets=[mobile_model])
