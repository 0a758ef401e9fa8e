"""Operations per day, service and state, with duration percentiles: what the charts show.

A SQL view, because percentiles are not an aggregate the ORM's read_group offers. Each row is one
(day, service, state): its percentiles are exact for that group. A pivot that merges rows (a
whole month, all states) shows the largest of the merged rows' percentiles, an upper bound.
"""

from odoo import fields, models, tools
from odoo.tools import SQL


class ComputeOperationStats(models.Model):
    _name = "compute.operation.stats"
    _description = "Compute Operation Statistics"
    _auto = False
    _order = "day desc, service"
    _rec_name = "day"

    day = fields.Date(readonly=True)
    service = fields.Char(readonly=True)
    state = fields.Selection(
        selection=lambda self: self.env["compute.operation"]._fields["state"].selection,
        readonly=True)
    count = fields.Integer(string="Operations", readonly=True)
    duration_avg = fields.Float(string="Average (ms)", readonly=True, aggregator="avg",
                                digits=(16, 1))
    duration_p50 = fields.Float(string="Median (ms)", readonly=True, aggregator="max",
                                digits=(16, 1))
    duration_p90 = fields.Float(string="90th percentile (ms)", readonly=True, aggregator="max",
                                digits=(16, 1))
    duration_p99 = fields.Float(string="99th percentile (ms)", readonly=True, aggregator="max",
                                digits=(16, 1))

    def init(self):
        tools.drop_view_if_exists(self.env.cr, self._table)
        self.env.cr.execute(SQL(
            """CREATE VIEW %s AS (
                SELECT row_number() OVER () AS id, day, service, state, count, duration_avg,
                       duration_p50, duration_p90, duration_p99
                  FROM (SELECT computed_on::date AS day, service, state, count(*) AS count,
                               avg(duration) AS duration_avg,
                               percentile_cont(0.5) WITHIN GROUP (ORDER BY duration)
                                   AS duration_p50,
                               percentile_cont(0.9) WITHIN GROUP (ORDER BY duration)
                                   AS duration_p90,
                               percentile_cont(0.99) WITHIN GROUP (ORDER BY duration)
                                   AS duration_p99
                          FROM compute_operation
                         WHERE computed_on IS NOT NULL
                         GROUP BY computed_on::date, service, state) AS daily
            )""", SQL.identifier(self._table)))
