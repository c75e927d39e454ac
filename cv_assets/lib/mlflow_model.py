"""Where models logged before the lib/ redesign find their loader.

MLflow records a pyfunc model's ``loader_module`` by name when the model is logged; models logged
by cv_assets 0.1.0 before the redesign name ``cv_assets.lib.mlflow_model``. This alias keeps them
loadable; new models name ``cv_assets.lib.tracking.mlflow_model``.
"""

from cv_assets.lib.tracking.mlflow_model import _load_pyfunc

__all__ = ["_load_pyfunc"]
