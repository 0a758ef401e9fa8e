"""The health service: GET /health answers whether this instance can do its work.

200 when the heartbeat's last broker check (services/dependencies.py BrokerCheck) reached the
broker and still stands (two heartbeat intervals); 503 otherwise: the broker is lost, or was
never reached, or the checks stopped. The body is this instance's identity either way.

GET /metrics on the same port: the Prometheus metrics of every service this process runs
(services/telemetry.py); 404 when COMPUTE_BRIDGE_METRICS=0.

Port: WEB_SERVER_ADDRESS (environment, then nameko config) is bound exactly; unset, 0.0.0.0:8000
is tried and a free port taken when another instance on the host has it (services/entrypoints.py).
"""

import json

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services import instance, telemetry
from services.dependencies import Registration
from services.entrypoints import health_http

SERVICE_NAME = "health"
STATUS_OK = "ok"
STATUS_NO_BROKER = "broker unreachable"


class HealthService:
    name = SERVICE_NAME

    registration = Registration()

    @health_http("GET", "/health")
    def health(self, request):
        body = instance.identity(SERVICE_NAME)
        body["status"] = STATUS_OK if body["broker_connected"] else STATUS_NO_BROKER
        status = 200 if body["broker_connected"] else 503
        return status, {"Content-Type": "application/json"}, json.dumps(body)

    # The metrics of every service this process runs: they share prometheus-client's registry.
    @health_http("GET", "/metrics")
    def metrics(self, request):
        if not telemetry.METRICS_ON:
            return 404, {"Content-Type": "text/plain"}, "metrics are off (COMPUTE_BRIDGE_METRICS)\n"
        return 200, {"Content-Type": CONTENT_TYPE_LATEST}, generate_latest().decode()
