"""Local-development drivers, apart from the product: ``make demo`` (``demo.py``), preparing
``CV_ASSETS_HOME`` (``home.py``), and stopping the servers they start (``procs.py``)."""
