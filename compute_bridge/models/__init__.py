from . import compute_operation
from . import compute_service_instance
from . import res_config_settings
from . import compute_bridge_config
