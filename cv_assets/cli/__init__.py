"""The ``cv-assets`` command line: ``main`` and its argument parser in ``main.py``, one module per
command beside it, all reading through ``cv_assets.read_side``. A command never imports another."""

from cv_assets.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
