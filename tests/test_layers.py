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
    "hosts",  # the hypervisors over SSH: needs the inventory's credentials and the repository's writes
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


# Relations to a model of a higher layer that are still there, each with why. The jobs app's kinds,
# policy and policy run are gone (a job's kind is registered, what started it is a generic reference,
# a run's jobs are a job group); a new one fails the test below.
KNOWN_UPWARD_RELATIONS = {
    # A job's VM and engine: the per-VM exclusive key, slots and the pages' filters read them. The
    # next step is a generic "object" as NetBox's Job has, once the VM pages stop joining on it.
    "jobs.Job.manager -> inventory.Manager",
    "jobs.Job.vm -> inventory.VM",
    # A point records the policy that made it (its retention's scope).
    "repository.BackupPoint.policy -> policies.Policy",
}


def upward_relations() -> set[str]:
    from django.apps import apps

    rank = {package: n for n, package in enumerate(LAYERS)}
    found = set()
    for model in apps.get_models():
        app = model._meta.app_label
        for field in model._meta.get_fields():
            if not field.is_relation or field.auto_created or field.related_model is None:
                continue
            target = field.related_model._meta.app_label
            if app in rank and target in rank and rank[target] > rank[app]:
                found.add(f"{app}.{model.__name__}.{field.name} -> {target}.{field.related_model.__name__}")
    return found


def test_it_keeps_models_from_pointing_upwards():
    assert upward_relations() == KNOWN_UPWARD_RELATIONS


def kinds_named(path: Path, kinds: set[str]) -> list[str]:
    """String literals of `path` that are one of `kinds` (not a settings key read with .get())."""
    tree = ast.parse(path.read_text())
    keys = {
        id(node.args[0])
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args
    }
    return [
        f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{node.lineno} {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in kinds and id(node) not in keys
    ]


def test_it_keeps_the_jobs_app_free_of_other_apps_kinds():
    """Kinds are registered by their apps (jobs.kinds): none is named in the jobs app's code."""
    from jobs.kinds import HANDLERS

    named = []
    for path in modules("jobs"):
        if "migrations" not in path.parts:  # history: the migrations moved the old columns and constraints
            named += kinds_named(path, set(HANDLERS))
    assert named == []


def test_it_finds_a_kind_named_in_code(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        'def f(jobs, settings):\n    settings.Q_CLUSTER.get("sync")\n    return jobs.filter(kind="backup")\n'
    )
    assert [found.split(" ")[1] for found in kinds_named(module, {"sync", "backup"})] == ["'backup'"]
