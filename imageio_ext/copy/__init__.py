"""The copy engine: ovirt-imageio transfers <-> the ovault store.

No HTTP server here: the mover service (`imageio_ext.mover`) and the
orchestrator's direct mode both call `run_copy`. Lower-level entry points
(`backup_disk`, `restore_disk`) take any `ImageSource`/`ImageSink`, which is
how the unit tests drive them with in-memory fakes.
"""

from .backup import ImageSource, backup_disk
from .direct import run_copy
from .errors import (
    BackupNotFound,
    BadExtents,
    CopyError,
    CorruptedBackup,
    DirtyExtentsUnavailable,
    ImageioError,
    ImageioUnavailable,
    InvalidRequest,
    StoreFailed,
    TargetUnavailable,
    TransferNotFound,
)
from .imageio import ImageioClient
from .plan import ImageExtent, Step, plan_backup
from .progress import Meter, Progress, ProgressCallback
from .restore import ImageSink, restore_disk
from .result import CopyResult
from .spec import CopySpec

__all__ = [
    "run_copy",
    "backup_disk",
    "restore_disk",
    "CopySpec",
    "CopyResult",
    "Progress",
    "ProgressCallback",
    "Meter",
    "ImageioClient",
    "ImageSource",
    "ImageSink",
    "ImageExtent",
    "Step",
    "plan_backup",
    "CopyError",
    "InvalidRequest",
    "ImageioError",
    "TransferNotFound",
    "ImageioUnavailable",
    "DirtyExtentsUnavailable",
    "BadExtents",
    "TargetUnavailable",
    "CorruptedBackup",
    "BackupNotFound",
    "StoreFailed",
]
