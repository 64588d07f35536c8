"""Where the mover looks for a host's sockets agrees with an oVirt host's layout
(docs/mover.md, *Deployment beside imageio*) and with roles/ovault_mover: the
data socket is imageio's abstract ``[local] socket``, the control socket its
``[control] socket`` file, and the backends a ticket names are vdsm's qemu-nbd
sockets (transfers) or qemu's backup socket with the disk as export name."""
from __future__ import annotations

from pathlib import Path

import yaml

from imageio_ext.copy.nbd_direct import nbd_unix_url
from imageio_ext.mover.config import MoverConfig

ROLE = Path(__file__).resolve().parents[3] / "deploy" / "ansible" / "roles" / "ovault_mover"


def _config(**kw) -> MoverConfig:
    return MoverConfig.load(env={}, overrides={"token": "t" * 16, "allowed_stores": "nfs://nas/x", **kw})


def test_defaults_are_imageio_s_sockets_on_a_host():
    cfg = _config()
    assert cfg.imageio_socket == "\0/org/ovirt/imageio"  # abstract: no file, no group needed
    assert cfg.imageio_control_socket == "/run/ovirt-imageio/sock"


def test_the_role_writes_the_same_sockets():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert defaults["ovault_mover_imageio_socket"] == _config().imageio_socket
    assert "'/run/ovirt-imageio/sock' if ovault_mover_direct_nbd" in defaults["ovault_mover_imageio_control_socket"]
    assert "['ovirtimg', 'kvm', 'qemu'] if ovault_mover_direct_nbd" in defaults["ovault_mover_groups"]
    template = (ROLE / "templates" / "mover.toml.j2").read_text()
    assert "'imageio_control_socket': ovault_mover_imageio_control_socket" in template


def test_at_spelling_and_empty_control_socket():
    assert _config(imageio_socket="@/x/y").imageio_socket == "\0/x/y"
    assert _config(imageio_control_socket="").imageio_control_socket == ""  # always through imageio


def test_backends_of_vdsm_transfers_and_vm_backups_are_direct():
    assert nbd_unix_url("nbd:unix:/run/vdsm/nbd/3f5c.sock") == ("/run/vdsm/nbd/3f5c.sock", "")
    assert nbd_unix_url("nbd:unix:/run/vdsm/backup/b4c2:exportname=sda") == ("/run/vdsm/backup/b4c2", "sda")
    assert nbd_unix_url("nbd:unix:run/vdsm/nbd/x.sock") is None  # relative: never
    assert nbd_unix_url("file:///rhev/data-center/mnt/x") is None
