"""The hypervisor hosts over SSH, shared by every path that reads or writes volumes on a host (the SSH
transfer's backups, the SSH restore, and any later strategy that needs a host): which host to use
for a VM and the login to it (login.py), the session on it (session.py: commands, LV activation,
volume reads and writes over OpenSSH or netcat), and the merge here of the volumes copied off it
into one image (chain.py).

It sits above `inventory` (a host's stored credentials are a model: inventory.ssh) and `repository`
(a volume copied into a point is hashed and written back as it lands: repository.storage), and
below `strategies` and `recovery`, which both use it: no strategy or restore imports another's code
to reach a host.
"""
