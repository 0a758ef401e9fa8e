"""Placeholder: the services helper replaces this."""
from .compute import ComputeService  # noqa: F401
