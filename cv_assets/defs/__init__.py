"""One package per asset group; ``cv_assets.definitions`` merges their ``defs``."""
