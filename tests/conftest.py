"""Shared by the Nameko test layers (unit, service, integration); never loaded by the Odoo tests.

nameko 2.14.1's pytest plugin no longer monkey-patches and there is no `nameko test` command, so
eventlet is patched here, before anything imports socket, threading or time. The Odoo tests run
in another pytest process (tools/test.sh) and must never see this.
"""

import warnings

# eventlet 0.40+ warns on import that it is in maintenance mode; nameko 2.x has no alternative.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import eventlet

eventlet.monkey_patch()

import os  # noqa: E402 - after the monkey-patching, on purpose

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
