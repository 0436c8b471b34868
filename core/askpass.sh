#!/bin/sh
# OpenSSH's askpass for a host that logs in with a password (core/openssh.py): ssh runs this when it
# asks for the password, with its prompt as argument; the answer is the 0600 file the connection wrote.
exec cat -- "$OVIRT_BACKUP_SSH_PASSWORD_FILE"
