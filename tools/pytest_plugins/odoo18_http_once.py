"""One Odoo HTTP server per pytest session, for tools/odoo_test.sh (``-p odoo18_http_once``).

pytest-odoo 2.1.3's ``load_http`` fixture calls ``odoo.service.server.start(stop=True)`` once per
test module. With Odoo 18 that reads a test report that does not exist ("'NoneType' object has no
attribute 'wasSuccessful'") and binds the HTTP port again for the next module ("Address already in
use"). This plugin makes ``start()`` spawn one HTTP thread for the whole session instead.
"""


def pytest_configure(config):
    from odoo.service import server as odoo_server

    def start_http_once(preload=None, stop=False):
        # pytest-odoo may already have created the (not yet listening) server object.
        if odoo_server.server is None:
            import odoo.http

            odoo_server.server = odoo_server.ThreadedServer(odoo.http.root)
        if getattr(odoo_server.server, "httpd", None) is None:
            odoo_server.server.http_spawn()
            # Odoo makes request threads non-daemon so that a server stop waits for them; an
            # XML-RPC client's keep-alive connection would then keep pytest from exiting.
            odoo_server.server.httpd.daemon_threads = True
        return 0

    odoo_server.start = start_http_once


def pytest_unconfigure(config):
    from odoo.service import server as odoo_server

    httpd = getattr(odoo_server.server, "httpd", None)
    if httpd is not None:
        httpd.shutdown()
