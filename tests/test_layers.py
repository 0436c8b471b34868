"""The layers of docs/architecture.md: each package imports only the packages below it.

URL names are not imports: a page of a lower app may link to a page of a higher one by name
("vm-detail"), resolved at request time through the root URLconf."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. Lazy model references by string ("policies.Policy") are not imports and are fine.
LAYERS = [
    "core",
    "ovirt",
    "jobs",
    "inventory",
    "repository",
    "strategies",
    "recovery",
    "policies",
    "alerts",
    "dashboard",
    "backupsite",  # the composition root: settings, urls, wsgi/asgi
]
# Packages of ours that sit beside the layers and import none of them.
STANDALONE = ["ovirtsim"]


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """Our top-level packages a module imports, anywhere in it (inside functions too), with lines."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in LAYERS or top in STANDALONE:
                found.add((top, node.lineno))
    return found


def modules(package: str):
    # Migrations too: they run on every `migrate`. (The policy model's validators left the jobs app's
    # migrations when it moved: validators are not part of the database schema.)
    return sorted((ROOT / package).rglob("*.py"))


def test_it_imports_only_downwards():
    wrong = []
    for rank, package in enumerate(LAYERS):
        allowed = set(LAYERS[: rank + 1])
        for path in modules(package):
            for top, line in sorted(imported_packages(path)):
                if top not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {top}, a layer above {package}")
    assert wrong == []


def test_it_keeps_the_simulator_apart():
    wrong = []
    for package in STANDALONE:
        for path in modules(package):
            for top, line in sorted(imported_packages(path)):
                if top != package:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {top}")
    assert wrong == []


def test_it_knows_every_package():
    """A new package must be given its place in the layers (or declared standalone)."""
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages == set(LAYERS) | set(STANDALONE)


def test_it_catches_an_upward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from strategies.registry import all_strategies\n")
    assert imported_packages(module) == {("strategies", 2)}
