"""The engine's permits (ActionGroup) as the API names them, and its predefined SuperUser role."""

SUPER_USER_ROLE = "00000000-0000-0000-0000-000000000001"  # the engine's predefined SuperUser role
# The engine's ActionGroup ids of the permits whose actions the simulator checks (and login).
PERMITS = {
    "create_vm": 1,
    "delete_vm": 2,
    "edit_vm_properties": 3,
    "import_export_vm": 8,
    "configure_vm_storage": 10,
    "manipulate_vm_snapshots": 12,
    "stop_vm": 18,
    "shut_down_vm": 19,
    "run_vm": 22,
    "create_storage_domain": 600,
    "delete_storage_domain": 602,
    "manipulate_storage_domain": 603,
    "create_disk": 1100,
    "attach_disk": 1101,
    "edit_disk_properties": 1102,
    "configure_disk_storage": 1103,
    "delete_disk": 1104,
    "backup_disk": 1110,
    "login": 1300,
    "tag_management": 1301,
}
NOT_AUTHORIZED = "User is not authorized to perform this action."
