"""File-level restore: path validation and mapping (orchestrator/files/paths.py) and
search matching (files/search.py) — the parts that treat guest paths as hostile input."""
from __future__ import annotations

import pytest

from orchestrator.errors import Invalid, NotFound
from orchestrator.files import paths as P
from orchestrator.files.search import check_pattern, matches

MOUNTS = {"sda1": "/fs0", "sda2": "/fs1", "vg0/root": "/fs2", "vg0/home": "/fs3"}


@pytest.mark.parametrize("bad", ["", "etc", "sda1/etc", "/sda1/../etc", "/sda1/./etc", "/..", "/sda1/a\x00b",
                                 "/" + "a" * 256, "/" + "/a" * 2100, "/sda1/\udc80"])
def test_hostile_paths_are_refused(bad):
    with pytest.raises(Invalid):
        P.split(bad)


def test_split_folds_slashes():
    assert P.split("//sda1///etc//") == ["sda1", "etc"]
    assert P.split("/") == []


def test_resolve_maps_onto_our_mount_points():
    r = P.resolve("/sda1/etc/hostname", MOUNTS)
    assert (r.fs, r.mount, r.inner, r.appliance) == ("sda1", "/fs0", "/etc/hostname", "/fs0/etc/hostname")
    r = P.resolve("/vg0/root/var/log", MOUNTS)
    assert (r.fs, r.appliance) == ("vg0/root", "/fs2/var/log")
    assert P.resolve("/sda2", MOUNTS).appliance == "/fs1"


def test_virtual_folders_and_unknown_file_systems():
    root = P.resolve("/", MOUNTS)
    assert root.fs is None and root.virtual == ()
    assert P.virtual_children((), MOUNTS) == {"sda1": True, "sda2": True, "vg0": False}
    vg = P.resolve("/vg0", MOUNTS)
    assert vg.fs is None and vg.virtual == ("vg0",)
    assert P.virtual_children(("vg0",), MOUNTS) == {"root": True, "home": True}
    for missing in ("/sdz1", "/vg1/root", "/vg0/swap"):
        with pytest.raises(NotFound):
            P.resolve(missing, MOUNTS)


def test_device_names():
    assert P.fs_name("/dev/sda1") == "sda1"
    assert P.fs_name("/dev/vg0/root") == "vg0/root"
    assert P.fs_name("/dev/mapper/vg0-root") == "vg0-root"


def test_search_globs():
    assert matches("hostname", "/sda1/etc/hostname")
    assert not matches("hostname", "/sda1/etc/hostname.bak")
    assert matches("*.conf", "/vg0/root/etc/app.conf")
    assert matches("etc/*.conf", "/sda1/etc/app.conf")  # with a /: on the whole path
    assert not matches("etc/*.conf", "/sda1/srv/app.conf")
    assert matches("/sda1/etc/*", "/sda1/etc/app.conf")
    assert not matches("/sda1/etc/*", "/sda2/etc/app.conf")
    assert not matches("App.conf", "/sda1/etc/app.conf")  # case-sensitive, as the guests' file systems


@pytest.mark.parametrize("bad", [None, "", "*", "**", "*/*", "x" * 256, "a\x00b"])
def test_search_patterns_that_say_nothing_are_refused(bad):
    with pytest.raises(Invalid):
        check_pattern(bad)
