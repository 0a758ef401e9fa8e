from . import compute_operation
