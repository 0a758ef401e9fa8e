"""Database chores of tools/odoo_test.sh and tools/i18n_update.sh, through Odoo's own API.

    python tools/odoo_db.py -c CONF drop DB             drop DB if it exists
    python tools/odoo_db.py -c CONF module-state DB M   print absent, empty or module M's state
    python tools/odoo_db.py -c CONF uninstall DB M      uninstall M; exit 1 unless nothing is left

Run with the Odoo source on PYTHONPATH.
"""

import argparse
import sys

import odoo
from odoo.tools import config


def drop(name):
    from odoo.service import db

    config["list_db"] = True  # our servers run with list_db = False, which also blocks exp_drop
    if name in db.list_dbs(True):
        db.exp_drop(name)
    return 0


def module_state(name, module):
    from odoo.service import db
    from odoo.sql_db import db_connect

    if name not in db.list_dbs(True):
        print("absent")
        return 0
    with db_connect(name).cursor() as cr:
        cr.execute("SELECT to_regclass('ir_module_module')")
        if cr.fetchone()[0] is None:
            print("empty")
            return 0
        cr.execute("SELECT state FROM ir_module_module WHERE name = %s", [module])
        row = cr.fetchone()
    print(row[0] if row else "unknown")
    return 0


def uninstall(name, module):
    """Uninstall ``module``; then neither its tables nor its models may be left."""
    from odoo.modules.registry import Registry

    with Registry(name).cursor() as cr:
        env = odoo.api.Environment(cr, odoo.SUPERUSER_ID, {})
        env["ir.module.module"].search([("name", "=", module)]).button_immediate_uninstall()
    with Registry(name).cursor() as cr:
        cr.execute("SELECT state FROM ir_module_module WHERE name = %s", [module])
        state = cr.fetchone()[0]
        cr.execute("SELECT to_regclass('compute_operation'), "
                   "to_regclass('compute_service_instance')")
        tables = [table for table in cr.fetchone() if table]
        cr.execute("SELECT count(*) FROM ir_model WHERE model LIKE %s", ["compute.%"])
        models = cr.fetchone()[0]
    ok = state == "uninstalled" and not tables and not models
    print("uninstall: module %s, tables left %s, models left %s -> %s"
          % (state, tables or "none", models, "ok" if ok else "FAILED"))
    return 0 if ok else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-c", dest="conf", required=True, help="Odoo configuration file")
    parser.add_argument("action", choices=["drop", "module-state", "uninstall"])
    parser.add_argument("db")
    parser.add_argument("module", nargs="?")
    args = parser.parse_args()
    config.parse_config(["-c", args.conf])
    if args.action == "drop":
        return drop(args.db)
    if not args.module:
        parser.error("%s needs a module" % args.action)
    return (module_state if args.action == "module-state" else uninstall)(args.db, args.module)


if __name__ == "__main__":
    sys.exit(main())
