"""The engine's predefined roles and their permits, as data.

`PERMITS`: every permit (the engine's action groups) by name → (id, administrative).
`ROLES`: a role name → (the engine's fixed id, administrative role, its holders
see the objects under the one they hold it on, the ids of its permits) — the
roles and permit lists of a current engine's installation (seed data plus its
upgrades), for the roles a backup product's users commonly hold.

Permissions inherit down the tree (`parents`): a role held on the system, a
data center, a cluster or a storage domain applies to the objects under it
(a VM's cluster and data center; a disk's storage domain, its VM and that VM's
cluster). What the engine *shows* a user (`Filter: true`) is narrower: a role
on the object itself always shows it, a role on a parent only when the role
lets its holders view children (PowerUserRole, VmCreator, DiskCreator on a
cluster or a storage domain let a user create things there, not see the
VMs already in it).
"""
from __future__ import annotations

PERMITS = {
    "create_vm": (1, False), "delete_vm": (2, False), "edit_vm_properties": (3, False),
    "change_vm_cd": (5, False), "migrate_vm": (6, False), "connect_to_vm": (7, False),
    "import_export_vm": (8, True), "configure_vm_network": (9, False),
    "configure_vm_storage": (10, False), "move_vm": (11, False),
    "manipulate_vm_snapshots": (12, False), "reconnect_to_vm": (13, False),
    "change_vm_custom_properties": (14, True), "edit_admin_vm_properties": (15, True),
    "create_instance": (16, False), "reboot_vm": (17, False), "stop_vm": (18, False),
    "shut_down_vm": (19, False), "hibernate_vm": (21, False), "run_vm": (22, False),
    "reset_vm": (23, False), "create_host": (100, True), "edit_host_configuration": (101, True),
    "delete_host": (102, True), "manipulate_host": (103, True),
    "configure_host_network": (104, True), "create_template": (200, False),
    "edit_template_properties": (201, False), "delete_template": (202, False),
    "copy_template": (203, False), "configure_template_network": (204, False),
    "edit_admin_template_properties": (205, True), "create_vm_pool": (300, False),
    "edit_vm_pool_configuration": (301, False), "delete_vm_pool": (302, False),
    "vm_pool_basic_operations": (303, False), "create_cluster": (400, True),
    "edit_cluster_configuration": (401, True), "delete_cluster": (402, True),
    "configure_cluster_network": (403, True), "assign_cluster_network": (404, True),
    "manipulate_users": (500, True), "manipulate_roles": (501, True),
    "manipulate_permissions": (502, False), "add_users_and_groups_from_directory": (503, False),
    "edit_profile": (504, False), "create_storage_domain": (600, True),
    "edit_storage_domain_configuration": (601, True), "delete_storage_domain": (602, True),
    "manipulate_storage_domain": (603, True), "create_storage_pool": (700, True),
    "delete_storage_pool": (701, True), "edit_storage_pool_configuration": (702, True),
    "configure_storage_pool_network": (703, True), "create_storage_pool_network": (704, True),
    "delete_storage_pool_network": (705, True), "configure_engine": (800, True),
    "configure_quota": (900, True), "consume_quota": (901, False),
    "create_gluster_volume": (1000, True), "manipulate_gluster_volume": (1001, True),
    "delete_gluster_volume": (1002, True), "manipulate_gluster_hook": (1003, True),
    "manipulate_gluster_service": (1004, True), "create_disk": (1100, False),
    "attach_disk": (1101, False), "edit_disk_properties": (1102, False),
    "configure_disk_storage": (1103, False), "delete_disk": (1104, False),
    "configure_scsi_generic_io": (1105, True), "access_image_storage": (1106, False),
    "disk_live_storage_migration": (1107, False), "sparsify_disk": (1108, False),
    "reduce_disk": (1109, True), "backup_disk": (1110, True),
    "configure_network_vnic_profile": (1203, True), "create_network_vnic_profile": (1204, True),
    "delete_network_vnic_profile": (1205, True), "login": (1300, False),
    "tag_management": (1301, True), "bookmark_management": (1302, True),
    "event_notification_management": (1303, True), "audit_log_management": (1304, True),
    "inject_external_events": (1400, True), "inject_external_tasks": (1500, True),
    "manipulate_affinity_groups": (1550, True), "configure_storage_disk_profile": (1560, True),
    "create_storage_disk_profile": (1561, True), "delete_storage_disk_profile": (1562, True),
    "attach_disk_profile": (1563, False), "create_mac_pool": (1660, True),
    "edit_mac_pool": (1661, True), "delete_mac_pool": (1662, True),
    "configure_mac_pool": (1663, True), "connect_to_serial_console": (1664, False),
    "delete_cpu_profile": (1665, True), "update_cpu_profile": (1666, True),
    "create_cpu_profile": (1667, True), "assign_cpu_profile": (1668, True),
}

ROLES = {
    "SuperUser": ("00000000-0000-0000-0000-000000000001", True, True, (
        1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 18, 19, 21, 22, 23, 100, 101, 102, 103,
        104, 200, 201, 202, 203, 204, 205, 300, 301, 302, 303, 400, 401, 402, 403, 404, 500, 501,
        502, 503, 600, 601, 602, 603, 700, 701, 702, 703, 704, 705, 800, 900, 901, 1000, 1001,
        1002, 1003, 1004, 1100, 1101, 1102, 1103, 1104, 1105, 1106, 1107, 1108, 1109, 1110, 1203,
        1204, 1205, 1300, 1301, 1302, 1303, 1304, 1400, 1500, 1550, 1560, 1561, 1562, 1563, 1660,
        1661, 1662, 1663, 1664, 1665, 1666, 1667, 1668,)),
    "UserRole": ("00000000-0000-0000-0001-000000000001", False, True, (
        5, 7, 17, 18, 19, 21, 22, 23, 303, 1106, 1300,)),
    "PowerUserRole": ("00000000-0000-0000-0001-000000000002", False, False, (
        1, 200, 1100, 1106, 1300, 1563, 1665, 1666, 1667, 1668,)),
    "ClusterAdmin": ("def00001-0000-0000-0000-def000000001", True, True, (
        1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15, 17, 18, 19, 21, 22, 23, 100, 101, 102, 103,
        104, 300, 301, 302, 303, 400, 401, 402, 403, 502, 503, 1100, 1101, 1102, 1103, 1104, 1107,
        1108, 1109, 1110, 1300, 1301, 1302, 1303, 1304, 1550, 1563, 1663, 1665, 1666, 1667, 1668,)),
    "DataCenterAdmin": ("def00002-0000-0000-0000-def000000002", True, True, (
        1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15, 17, 18, 19, 21, 22, 23, 100, 101, 102, 103,
        104, 200, 201, 202, 203, 204, 205, 300, 301, 302, 303, 400, 401, 402, 403, 404, 502, 503,
        700, 701, 702, 703, 704, 705, 900, 901, 1100, 1101, 1102, 1103, 1104, 1105, 1107, 1108,
        1109, 1110, 1203, 1204, 1205, 1300, 1301, 1302, 1303, 1304, 1550, 1563, 1663, 1665, 1666,
        1667, 1668,)),
    "StorageAdmin": ("def00003-0000-0000-0000-def000000003", True, True, (
        600, 601, 602, 603, 1100, 1101, 1102, 1103, 1104, 1106, 1107, 1108, 1109, 1110, 1300, 1301,
        1302, 1303, 1304, 1560, 1561, 1562, 1563,)),
    "HostAdmin": ("def00004-0000-0000-0000-def000000004", True, True, (
        100, 101, 102, 103, 104, 600, 601, 602, 603, 1300, 1301, 1302, 1303, 1304, 1560, 1561,
        1562, 1563,)),
    "NetworkAdmin": ("def00005-0000-0000-0000-def000000005", True, True, (
        9, 104, 204, 403, 404, 703, 704, 705, 1203, 1204, 1205, 1300, 1301, 1302, 1303, 1304,)),
    "UserVmManager": ("def00006-0000-0000-0000-def000000006", False, True, (
        1, 2, 3, 5, 7, 9, 10, 12, 17, 18, 19, 21, 22, 23, 502, 503, 1100, 1101, 1102, 1104, 1108,
        1109, 1110, 1300, 1664, 1668,)),
    "UserVmRunTimeManager": ("def00006-0000-0000-0000-def000000011", False, False, (
        1, 2, 3, 5, 7, 9, 10, 17, 18, 19, 21, 22, 23, 502, 503, 1100, 1101, 1102, 1104, 1108, 1109,
        1110, 1300, 1668,)),
    "UserInstanceManager": ("def00012-0000-0000-0000-def000000012", False, False, (
        2, 3, 5, 7, 10, 12, 17, 18, 19, 21, 22, 23, 502, 503, 1100, 1101, 1102, 1104, 1108, 1109,
        1110, 1300, 1664,)),
    "VmCreator": ("def0000a-0000-0000-0000-def00000000d", False, False, (
        1, 1100, 1300, 1668,)),
    "DiskOperator": ("def0000a-0000-0000-0000-def00000000b", False, True, (
        502, 503, 1100, 1101, 1102, 1104, 1108, 1109, 1110, 1300,)),
    "DiskCreator": ("def0000a-0000-0000-0000-def00000000c", False, False, (
        1100, 1300,)),
    "TemplateOwner": ("def0000a-0000-0000-0000-def00000000f", False, True, (
        201, 202, 203, 204, 502, 503, 1300,)),
    "TemplateCreator": ("def0000a-0000-0000-0000-def00000000e", False, False, (
        200, 1300,)),
    "UserTemplateBasedVm": ("def00009-0000-0000-0000-def000000009", False, False, (
        1, 1668,)),
    "QuotaConsumer": ("def0000a-0000-0000-0000-def00000000a", False, False, (
        901,)),
    "ReadOnlyAdmin": ("def0000c-0000-0000-0000-def00000000c", True, True, (
        1300,)),
    "VmImporterExporter": ("def00030-0000-0000-0000-def000000011", True, True, (
        8, 1300, 1563, 1668,)),
}

PERMIT_NAMES = {pid: name for name, (pid, _) in PERMITS.items()}
ROLE_IDS = {name: r[0] for name, r in ROLES.items()}
ADMIN_ROLES = {name for name, r in ROLES.items() if r[1]}
VIEWS_CHILDREN = {name for name, r in ROLES.items() if r[2]}


def role_permits(role: str) -> set[str]:
    """The permit names of a role."""
    return {PERMIT_NAMES[i] for i in ROLES[role][3]}
