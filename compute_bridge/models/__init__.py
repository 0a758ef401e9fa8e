from . import compute_bridge
from . import compute_bridge_call
from . import compute_operation
from . import compute_service_instance
from . import ir_config_parameter
from . import res_config_settings
from . import ir_http
from . import compute_operation_stats
