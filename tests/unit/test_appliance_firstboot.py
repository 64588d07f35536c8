"""The appliance's first-boot script turns a NoCloud seed's network-config into
systemd-networkd files, and refuses what it cannot express safely."""
from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy/appliance/files/ovault-firstboot"


@pytest.fixture(scope="module")
def fb():
    loader = importlib.machinery.SourceFileLoader("ovault_firstboot", str(SCRIPT))
    spec = importlib.util.spec_from_loader("ovault_firstboot", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def test_version2_static_and_dhcp(fb):
    units = fb.network_units({"version": 2, "ethernets": {
        "lan": {"match": {"macaddress": "52:54:00:AA:BB:CC"}, "addresses": ["10.0.2.50/24"],
                "gateway4": "10.0.2.2", "nameservers": {"addresses": ["10.0.2.3"], "search": ["lab.test"]},
                "routes": [{"to": "192.168.7.0/24", "via": "10.0.2.9"}], "mtu": 9000},
        "ens4": {"dhcp4": True, "dhcp6": True},
    }})
    assert sorted(units) == ["10-seed-00-lan.network", "10-seed-01-ens4.network"]
    lan = units["10-seed-00-lan.network"].splitlines()
    assert lan[1:] == ["[Match]", "MACAddress=52:54:00:aa:bb:cc", "", "[Network]", "DHCP=no",
                       "Address=10.0.2.50/24", "Gateway=10.0.2.2", "DNS=10.0.2.3", "Domains=lab.test",
                       "", "[Route]", "Destination=192.168.7.0/24", "Gateway=10.0.2.9",
                       "", "[Link]", "MTUBytes=9000"]
    assert "Name=ens4" in units["10-seed-01-ens4.network"]
    assert "DHCP=yes" in units["10-seed-01-ens4.network"]


def test_version1_physical_with_netmask_and_global_dns(fb):
    units = fb.network_units({"version": 1, "config": [
        {"type": "physical", "name": "eth0", "mac_address": "52:54:00:00:00:01",
         "subnets": [{"type": "static", "address": "192.0.2.10", "netmask": "255.255.255.0",
                      "gateway": "192.0.2.1"}]},
        {"type": "nameserver", "address": ["192.0.2.53"], "search": ["example.test"]},
    ]})
    (text,) = units.values()
    assert "Address=192.0.2.10/24" in text and "Gateway=192.0.2.1" in text
    assert "DNS=192.0.2.53" in text and "Domains=example.test" in text
    assert "MACAddress=52:54:00:00:00:01" in text


@pytest.mark.parametrize("net, why", [
    ({"version": 3}, "version 3 is not supported"),
    ({"version": 2, "ethernets": {}}, "no interface"),
    ({"version": 2, "ethernets": {"e": {"addresses": ["10.0.0.1/24\nDNS=6.6.6.6"]}}}, "not an IP address"),
    ({"version": 2, "ethernets": {"e": {"match": {"name": "eth0\n[Network]"}}}}, "not valid"),
    ({"version": 2, "ethernets": {"e": {"match": {"macaddress": "zz"}}}}, "not a MAC address"),
    ({"version": 2, "ethernets": {"e": {"gateway4": "example.com"}}}, "not an IP address"),
    ({"version": 2, "ethernets": {"e": {"nameservers": {"search": ["a b"]}}}}, "not valid"),
    ({"version": 2, "ethernets": {"e": {"routes": [{"to": "default"}]}}}, "`to` and `via`"),
    ({"version": 2, "ethernets": {"e": {"mtu": 10}}}, "out of range"),
    ({"version": 1, "config": [{"type": "bond", "name": "b0"}]}, "not supported"),
])
def test_refused_with_a_reason(fb, net, why):
    with pytest.raises(SystemExit) as e:
        fb.network_units(net)
    assert why in str(e.value) and "network-config" in str(e.value)


def test_seed_files_are_read_including_a_wrapped_network_config(fb, tmp_path):
    (tmp_path / "meta-data").write_text("instance-id: x\n")
    (tmp_path / "user-data").write_text("#cloud-config\nhostname: h\n")
    (tmp_path / "network-config").write_text("network:\n  version: 2\n  ethernets:\n    e0: {dhcp4: true}\n")
    meta, user, net = fb.read_seed(tmp_path)
    assert meta == {"instance-id": "x"} and user == {"hostname": "h"}
    assert net == {"version": 2, "ethernets": {"e0": {"dhcp4": True}}}
