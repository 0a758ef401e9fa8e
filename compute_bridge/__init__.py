# First: telemetry sets PROMETHEUS_MULTIPROC_DIR, which must precede any prometheus_client import.
from . import telemetry
from . import controllers
from . import models

telemetry.setup()
