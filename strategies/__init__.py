"""The backup strategies: one skeleton (strategies.base) and one package per strategy beside it.

Each package defines a Strategy subclass whose class attributes say what it is (name, label,
incremental or not, minimum engine API version, deprecated); strategies.registry finds them.
"""
