"""MLab: HomePods, the Airlock and the code service, rendered from one site file."""

__version__ = "0.1.0"
