from . import heartbeat
from . import metrics
