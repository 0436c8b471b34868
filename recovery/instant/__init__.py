"""Instant restore: a backup point booted as a VM from the backup itself, served over NFS by the node
(layout.py: the temporary domain; workflow.py: boot, migrate, discard, prove; the record is
recovery.models.InstantRestore)."""
