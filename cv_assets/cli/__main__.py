"""``python -m cv_assets.cli``: the same as the ``cv-assets`` command."""

import sys

from cv_assets.cli.main import main

sys.exit(main())
