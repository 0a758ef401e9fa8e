"""Placeholder compute service (replaced by the services work)."""
from nameko.rpc import rpc


class ComputeService:
    name = "compute"

    @rpc
    def method(self, value1, value2):
        return value1 + value2
