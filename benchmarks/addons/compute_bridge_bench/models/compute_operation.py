"""The blog post's way, kept only to be measured: a new ClusterRpcProxy for every click.

Installed in the benchmark database only (addons_path <repo>,<repo>/benchmarks/addons). It reads
the broker URL exactly as the addon does, so both ways talk to the same broker and services and
differ only in how the call is made.
"""

import os

from odoo import models

from odoo.addons.compute_bridge.rpc import read_config


class ComputeOperation(models.Model):
    _inherit = "compute.operation"

    def action_suma_blog(self):
        """Open ClusterRpcProxy, call compute.method, store the sum, close: per click."""
        from nameko.standalone.rpc import ClusterRpcProxy

        config = read_config(self.env["ir.config_parameter"].sudo().get_param, os.environ)
        with ClusterRpcProxy({"AMQP_URI": config.broker_url}, timeout=config.timeout) as rpc:
            for operation in self:
                # the bridge's own path: a plain write of the result is refused to clients
                operation._write_bridge_fields(
                    {"result": rpc.compute.method(operation.field_1, operation.field_2)})
        return True
