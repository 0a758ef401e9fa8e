"""The managers' Broker Settings wizard (compute.bridge.config) is gone: on update Odoo removes
its model, view, action, menu and access rows, but not its table, which nothing would empty any
more and whose rows may hold broker URLs typed with their password."""


def migrate(cr, version):
    cr.execute("DROP TABLE IF EXISTS compute_bridge_config CASCADE")
