from . import heartbeat
