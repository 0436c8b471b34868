"""The engine client: every ovirtsdk4 call that more than one place needs.

Connecting (SSO, CA, TLS), waiting for the engine's asynchronous states, snapshots with the
quiesce fallback, image transfers with progress, and what an interrupted run leaves behind.
VM backups and checkpoints (CBT) and disk attachments (proxy VM) go here beside them.

It imports no Django model: callers pass what it needs (a manager's connection fields, a job
with `log`, `set_progress`, `cancel_is_requested` and `check_cancel`), so it sits below every app.
"""
