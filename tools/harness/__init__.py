"""The one harness of compute_bridge: what ``make run``, ``make test``, ``make bench`` and the
fault tests start, check and stop.

- :mod:`.broker`: RabbitMQ — check a broker (AMQP *and* management API), or run a private node;
- :mod:`.postgres`: PostgreSQL — check a server, or run a private cluster;
- :mod:`.odoo_server`: the Odoo source, the one writer of our Odoo configuration, and
  :class:`~.odoo_server.OdooServer`, one Odoo server process;
- :mod:`.nameko_run`: :class:`~.nameko_run.NamekoRun`, one ``nameko run`` process;
- :mod:`.process`: :func:`~.process.stop`, the one way we stop a process (SIGTERM, wait, SIGKILL);
- :mod:`.cli`: the command line (``python3 -m tools.harness``, or ``tools/stack.py``).

Standard library only (the venv may not exist yet), except where a function says it needs nameko.
Module names avoid ``odoo`` and ``nameko``: a script next to them must not shadow the packages.
"""
