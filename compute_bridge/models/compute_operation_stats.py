"""Operations per day, service and state, with duration percentiles: what the charts show.

A SQL view, because percentiles are not an aggregate the ORM's read_group offers. Each row is one
(day, service, state): its average and percentiles are exact for that group. Where a pivot or a
graph merges rows (a whole month, all states), the average is weighted by each row's timed
operations (their total duration over their number, _read_group_select), so it is the true mean;
percentiles cannot be merged: the largest of the merged rows' is shown, an upper bound, as the
fields' help says.
"""

from odoo import fields, models, tools
from odoo.tools import SQL

AVERAGE_SPEC = "duration_avg:avg"  # what the pivot and graph views ask read_group for
PERCENTILE_HELP = ("Exact for one day, service and state. Where rows are merged (several days or"
                   " states) this is the largest of their percentiles: an upper bound, not the"
                   " percentile of all their operations.")


class ComputeOperationStats(models.Model):
    _name = "compute.operation.stats"
    _description = "Compute Operation Statistics"
    _auto = False
    _order = "day desc, service"
    _rec_name = "day"

    # A day of UTC: percentiles cannot be merged, so they are computed per day in the database,
    # which does not know the user's time zone (the Operations graph groups in it).
    day = fields.Date(string="Day (UTC)", readonly=True,
                      help="The day the operations were computed on, in UTC.")
    service = fields.Char(readonly=True)
    state = fields.Selection(
        selection=lambda self: self.env["compute.operation"]._fields["state"].selection,
        readonly=True)
    count = fields.Integer(string="Operations", readonly=True)
    duration_avg = fields.Float(string="Average (ms)", readonly=True, aggregator="avg",
                                digits=(16, 1),
                                help="The mean duration of the operations, merged rows included.")
    # what the merged average is computed from
    duration_sum = fields.Float(string="Total duration (ms)", readonly=True, digits=(16, 1))
    duration_count = fields.Integer(string="Timed operations", readonly=True)
    duration_p50 = fields.Float(string="Median (ms)", readonly=True, aggregator="max",
                                digits=(16, 1), help=PERCENTILE_HELP)
    duration_p90 = fields.Float(string="90th percentile (ms)", readonly=True, aggregator="max",
                                digits=(16, 1), help=PERCENTILE_HELP)
    duration_p99 = fields.Float(string="99th percentile (ms)", readonly=True, aggregator="max",
                                digits=(16, 1), help=PERCENTILE_HELP)

    def _read_group_select(self, aggregate_spec, query):
        # merged rows: the mean of all their operations, not the mean of the rows' means
        if aggregate_spec == AVERAGE_SPEC:
            return SQL("SUM(%s) / NULLIF(SUM(%s), 0)",
                       self._field_to_sql(self._table, "duration_sum", query),
                       self._field_to_sql(self._table, "duration_count", query))
        return super()._read_group_select(aggregate_spec, query)

    def init(self):
        tools.drop_view_if_exists(self.env.cr, self._table)
        self.env.cr.execute(SQL(
            """CREATE VIEW %s AS (
                SELECT row_number() OVER () AS id, day, service, state, count, duration_avg,
                       duration_sum, duration_count, duration_p50, duration_p90, duration_p99
                  FROM (SELECT computed_on::date AS day, service, state, count(*) AS count,
                               avg(duration) AS duration_avg,
                               sum(duration) AS duration_sum,
                               count(duration) AS duration_count,
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
