"""The health service: GET /health answers 200 with this instance's identity.

Port choice, so that any number of `nameko run --broker ... services` can run on one host:
  - WEB_SERVER_ADDRESS (environment, then nameko config), e.g. "0.0.0.0:8000", is bound exactly
    and a clash is an error: a container's HEALTHCHECK must find its port where it was told.
  - Unset (the blog post's plain `nameko run --broker ...`): nameko's usual 0.0.0.0:8000 when it
    is free, else an ephemeral port, so a 2nd instance on the same host starts instead of
    failing to bind. The port taken is logged and reported in /health and in the heartbeats.
"""

import errno
import json
import logging

import eventlet
from nameko.constants import WEB_SERVER_CONFIG_KEY
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer, parse_address

from services import instance
from services.settings import setting

_logger = logging.getLogger(__name__)

SERVICE_NAME = "health"
DEFAULT_HEALTH_ADDRESS = "0.0.0.0:8000"  # nameko's own default web address
FALLBACK_PORT = 0  # the kernel picks a free port


class HealthWebServer(WebServer):
    """nameko's WebServer, binding as described in the module docstring."""

    @property
    def configured_address(self):
        return setting(self.container.config, WEB_SERVER_CONFIG_KEY)

    @property
    def bind_addr(self):
        return parse_address(self.configured_address or DEFAULT_HEALTH_ADDRESS)

    def listen(self):
        # reuse_port=False: eventlet sets SO_REUSEPORT by default, which would let two instances
        # share one port and answer each other's health checks.
        address = tuple(self.bind_addr)
        try:
            return eventlet.listen(address, reuse_port=False)
        except OSError as error:
            if self.configured_address or error.errno != errno.EADDRINUSE:
                raise
        _logger.info(
            "health: %s:%s is taken (another instance on this host?); using a free port",
            *address,
        )
        return eventlet.listen((address[0], FALLBACK_PORT), reuse_port=False)

    def start(self):
        # WebServer.start, with self.listen() in place of eventlet.listen(self.bind_addr)
        if not self._starting:
            self._starting = True
            self._sock = self.listen()
            self._sock.settimeout(None)  # work around https://github.com/celery/kombu/issues/838
            self._serv = self.get_wsgi_server(self._sock, self.get_wsgi_app())
            self._gt = self.container.spawn_managed_thread(self.run)
            instance.health_address = self._sock.getsockname()[:2]
            _logger.info("health: listening on http://%s:%s/health", *instance.health_address)


class HealthRequestHandler(HttpRequestHandler):
    server = HealthWebServer()


health_http = HealthRequestHandler.decorator


class HealthService:
    name = SERVICE_NAME

    @health_http("GET", "/health")
    def health(self, request):
        body = {"status": "ok"}
        body.update(instance.identity(SERVICE_NAME))
        return 200, {"Content-Type": "application/json"}, json.dumps(body)
