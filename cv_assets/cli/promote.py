"""``cv-assets promote`` and ``rollback``: a person moves the ``champion`` alias.

The decision is kept in the registry's promotion history and becomes ``champion_model``'s
newest materialization, so the UI and the monitoring assets see it.
"""

import argparse
import getpass
import sys

from cv_assets.defs.training.champion import report_champion_decision
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.tracking.registry import RegistryError
from cv_assets.read_side import open_instance, registry_for

PROMOTABLE = ("pending_approval", "archived", "registered", "failed")


def run(args: argparse.Namespace, cfg: PlatformConfig) -> int:
    """``promote VERSION`` or ``rollback``; exit 2 when the registry refuses."""
    reg = registry_for(cfg)
    who = args.who or getpass.getuser()
    try:
        if args.command == "promote":
            target = reg.get(args.version)
            if target.status not in PROMOTABLE:
                raise RegistryError(f"version {args.version} is {target.status}; cannot promote")
            e = reg.promote(args.version, who, args.reason or "manual approval", action="approve")
        else:
            e = reg.rollback(who, args.reason or "manual rollback")
    except RegistryError as err:
        print(f"cv-assets {args.command}: {err}", file=sys.stderr)
        return 2
    # The decision becomes champion_model's newest materialization: the UI's history and lineage
    # show it, and the monitoring assets measure this champion from their next run on.
    instance = open_instance(cfg)
    try:
        report_champion_decision(instance, reg.store, reg, e, cfg.mlflow_ui_url)
    finally:
        instance.dispose()
    print(f"{e['action']}: champion is now v{e['version']} (was v{e['previous']}), by {e['who']}")
    return 0
