"""The engine's VM inventory kept current from its event log (`cache.Inventory`)
and what the service wires to it (`wiring.attach`)."""
from .cache import Change, Inventory

__all__ = ["Change", "Inventory"]
