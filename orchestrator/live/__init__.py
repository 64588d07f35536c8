"""Live progress: the websocket's data source (`Hub`) and message shapes.

    hub = Hub(catalog, dsn, metrics=m); await hub.start()
    JobRunner(on_event=hub.runner_event)     # progress samples of this replica
    hub.add(Client(principal, queue_size))   # the websocket handler does this

See `hub` for the cross-replica design and the slow-client policy, and
`messages` for every message a client receives.
"""
from .hub import CLOSE_SEND_TIMEOUT, CLOSE_TOO_SLOW, Client, Hub
from .progress import ProgressTracker

__all__ = ["Hub", "Client", "ProgressTracker", "CLOSE_TOO_SLOW", "CLOSE_SEND_TIMEOUT"]
