"""What the tests and benchmarks share, so that none imports a conftest or another test module.

Fixtures stay in the ``conftest.py`` files (they may call these helpers). One module per kind:

- ``landing``: synthetic batches in the landing zone (``land``), what intake calls each planted
  fault (``EXPECTED_RULE``), hand-built PNG bombs (``png_with_chunk``, ``inflating``).
- ``jobs``: Dagster jobs run in process (``run_intake``, ``ingest``, ``train``, ``QUIET``,
  ``TINY``) and what they report (``materialized``, ``check_named``).
- ``processes``: other processes (``free_port``, ``cli``, ``Daemon`` for ``dagster dev``).
- ``models``: model files made by hand (``constant_detector``, ``head_output``,
  ``RunsAShellCommand``) and the printed form of detections (``as_printed``).
- ``review``: a batch whose labels are corrupted on purpose, and its review queue.
- ``coco``: the COCO reference score (faster-coco-eval) of a set of detections.
- ``reports``: each run's durations, kept under ``.cv_assets/test-reports/`` (the root conftest's
  ``pytest_terminal_summary`` calls it).
"""
