"""The `ovault-mover` service: the copy engine behind an authenticated HTTP API."""

from .app import CONFIG, JOBS, create_app
from .config import ConfigError, MoverConfig
from .jobs import Job, JobConflict, JobManager

__all__ = ["create_app", "MoverConfig", "ConfigError", "JobManager", "Job", "JobConflict", "CONFIG", "JOBS"]
