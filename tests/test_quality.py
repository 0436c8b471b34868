import ast
import subprocess
import sys
from io import StringIO
from pathlib import Path

from django.core.management import call_command

ROOT = Path(__file__).resolve().parent.parent


def test_it_has_no_missing_migrations(db):
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_it_passes_ruff():
    ruff = Path(sys.executable).with_name("ruff")
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run([str(ruff), *args], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_it_creates_the_roles_in_a_migration(db):
    """The migration's own step, run here: a transactional test before this one on the same worker
    flushes the tables, and the groups the migration made with them (the site never flushes)."""
    from importlib import import_module

    from django.apps import apps
    from django.contrib.auth.models import Group

    from core import roles

    migration = import_module("core.migrations.0001_roles")
    assert {op.code for op in migration.Migration.operations} == {migration.create_roles}
    Group.objects.filter(name__in=roles.ROLES).delete()
    migration.create_roles(apps, None)
    assert set(Group.objects.values_list("name", flat=True)) >= {"admin", "operator", "viewer"} == set(roles.ROLES)


# ----- Tests that cannot flake (issue 21): a scan of tests/ with ast -----
# A test passes or fails for what the product does, never for how fast the machine is or for
# whichever exception happened to be raised; and a test that checks nothing cannot fail.

# Calls that fail the test by themselves when what they check does not hold: pytest's raises,
# warns and fail, Playwright's expect, schemathesis' call_and_validate.
CHECKING_CALLS = {"raises", "warns", "fail", "expect", "call_and_validate"}
# qemu-img's subcommands that fail on a difference or a damaged image (run with check=True).
CHECKING_QEMU_IMG = {"compare", "check"}
# Clock readings: their difference compared with a literal asserts a duration.
CLOCK_CALLS = {
    ("time", "time"),
    ("time", "monotonic"),
    ("time", "perf_counter"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("timezone", "now"),
}
BROAD_EXCEPTIONS = {"Exception", "BaseException"}


def _called_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _is_clock(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call) or node.args or not isinstance(node.func, ast.Attribute):
        return False
    owner = node.func.value
    owner_name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
    return (owner_name, node.func.attr) in CLOCK_CALLS


def _is_literal(node: ast.AST) -> bool:
    """A number written in the test: 5, -1, 9.5 * 2**20, timedelta(days=30)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, int | float) and not isinstance(node.value, bool)
    if isinstance(node, ast.UnaryOp):
        return _is_literal(node.operand)
    if isinstance(node, ast.BinOp):
        return _is_literal(node.left) and _is_literal(node.right)
    if isinstance(node, ast.Call) and _called_name(node) == "timedelta":
        return all(_is_literal(arg) for arg in [*node.args, *(k.value for k in node.keywords)])
    return False


def _runs_qemu_img_check(call: ast.Call) -> bool:
    words = [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    if _called_name(call) == "qemu_img":
        words.insert(0, "qemu-img")
    return any(a == "qemu-img" and b in CHECKING_QEMU_IMG for a, b in zip(words, words[1:], strict=False))


class _TestFile:
    """One file of tests/: its offences (broad raises, clock deltas), its functions, what they call."""

    def __init__(self, path: Path, root: Path):
        self.path = path.relative_to(root)
        self.module = ".".join(self.path.with_suffix("").parts)
        self.offences: list[str] = []
        self.tests: dict[str, int] = {}  # test function -> line
        self.checks: set[tuple[str, str]] = set()  # functions that check by themselves
        self.functions: dict[tuple[str, str], list[ast.AST]] = {}  # function -> its nodes, nested ones included
        self.clocked: set[tuple[str, str]] = set()  # functions that read a clock
        tree = ast.parse(path.read_text(), filename=str(path))
        # Names that are functions of tests/: defined here, or imported from another file of tests/
        # (gathered as the functions are walked, and from the module's own statements).
        self.names: dict[str, tuple[str, str]] = {}
        self.add_names(tree.body)
        # Module constants holding a number (`STOP_WITHIN = 30`): literals under another name.
        self.constants = {
            target.id
            for node in tree.body
            if isinstance(node, ast.Assign) and _is_literal(node.value)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        called: dict[tuple[str, str], set[str]] = {}
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                called[(self.module, node.name)] = self.scan_function(node)
            elif isinstance(node, ast.ClassDef):
                for method in node.body:
                    if isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef):
                        test_class = node.name.startswith("Test")
                        called[(self.module, method.name)] = self.scan_function(method, test_class=test_class)
        self.calls = {key: {self.names[n] for n in names if n in self.names} for key, names in called.items()}

    def add_names(self, nodes) -> None:
        for node in nodes:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self.names[node.name] = (self.module, node.name)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tests":
                self.names |= {(a.asname or a.name): (node.module, a.name) for a in node.names}

    def where(self, node: ast.AST) -> str:
        return f"{self.path}:{node.lineno}"

    def scan_function(self, function: ast.FunctionDef | ast.AsyncFunctionDef, *, test_class: bool = True) -> set[str]:
        """Record what the function checks and whether it reads a clock; the names it calls."""
        key = (self.module, function.name)
        if function.name.startswith("test_") and test_class:
            self.tests[function.name] = function.lineno
        called = set()
        nodes = self.functions[key] = list(ast.walk(function))
        self.add_names(nodes)
        for node in nodes:
            if isinstance(node, ast.Assert | ast.Raise):
                self.checks.add(key)
            elif isinstance(node, ast.Call):
                if _is_clock(node):
                    self.clocked.add(key)
                name = _called_name(node)
                if name in CHECKING_CALLS or name.startswith("assert_") or _runs_qemu_img_check(node):
                    self.checks.add(key)
                if isinstance(node.func, ast.Name):
                    called.add(node.func.id)
                if name == "raises" and node.args and self.is_broad(node.args[0]):
                    self.offences.append(
                        f"{self.where(node)}: pytest.raises({ast.unparse(node.args[0])}) passes on any error; "
                        "name the exception the user gets and match its message"
                    )
        return called

    def resolve(self, call: ast.Call) -> tuple[str, str] | None:
        """The function of tests/ a call calls, if it is one."""
        return self.names.get(call.func.id) if isinstance(call.func, ast.Name) else None

    @staticmethod
    def is_broad(expected: ast.AST) -> bool:
        names = expected.elts if isinstance(expected, ast.Tuple) else [expected]
        return any(isinstance(n, ast.Name) and n.id in BROAD_EXCEPTIONS for n in names)

    # ----- durations: clock readings subtracted, in a test or returned by a helper that times something

    def timing(self, key: tuple[str, str], timers: set[tuple[str, str]]) -> "_Timing | None":
        """The names of a function that hold clock readings and durations, or None when it reads no
        clock and calls no helper that times (most tests: nothing to follow then)."""
        if key not in self.clocked and not self.calls[key] & timers:
            return None
        timing = _Timing(self, timers)
        assignments = [n for n in self.functions[key] if isinstance(n, ast.Assign)]
        while True:  # assignments in any order (a loop's body before its start): a fixed point
            before = len(timing.clocks) + len(timing.durations)
            for node in assignments:
                names = {t.id for t in node.targets if isinstance(t, ast.Name)}
                if timing.is_duration(node.value):
                    timing.durations |= names
                elif timing.reads_clock(node.value):
                    timing.clocks |= names
            if len(timing.clocks) + len(timing.durations) == before:
                return timing

    def returns_duration(self, key: tuple[str, str], timers: set[tuple[str, str]]) -> bool:
        timing = self.timing(key, timers)
        returns = (n for n in self.functions[key] if isinstance(n, ast.Return) and n.value is not None)
        return timing is not None and any(timing.is_duration(n.value) for n in returns)

    def check_timing(self, timers: set[tuple[str, str]]) -> None:
        for key, nodes in self.functions.items():
            timing = self.timing(key, timers)
            for assertion in (n for n in nodes if isinstance(n, ast.Assert)) if timing else []:
                for compare in (n for n in ast.walk(assertion.test) if isinstance(n, ast.Compare)):
                    operands = [compare.left, *compare.comparators]
                    if any(map(timing.is_duration, operands)) and any(map(self.is_literal, operands)):
                        self.offences.append(
                            f"{self.where(assertion)}: asserts a duration on the real clock "
                            f"({ast.unparse(compare)}); inject a clock, or assert what the user sees instead"
                        )

    def is_literal(self, node: ast.AST) -> bool:
        return _is_literal(node) or (isinstance(node, ast.Name) and node.id in self.constants)


class _Timing:
    """What holds time in one function: `clocks` (readings: `started`, a `deadline`), `durations`
    (`elapsed = time.monotonic() - started`, `took = stop_and_time(...)` of a helper that times)."""

    def __init__(self, file: _TestFile, timers: set[tuple[str, str]]):
        self.file, self.timers = file, timers
        self.clocks: set[str] = set()
        self.durations: set[str] = set()

    def reads_clock(self, node: ast.AST) -> bool:
        return any(_is_clock(n) or (isinstance(n, ast.Name) and n.id in self.clocks) for n in ast.walk(node))

    def is_duration(self, node: ast.AST) -> bool:
        """`time.monotonic() - started`, a name holding one, a timing helper's answer, `abs(...)`,
        `(...).total_seconds()`."""
        while isinstance(node, ast.Call) and _called_name(node) in {"abs", "round", "int", "total_seconds"}:
            node = node.args[0] if node.args else node.func.value
        if isinstance(node, ast.Name):
            return node.id in self.durations
        if isinstance(node, ast.Call):
            return self.file.resolve(node) in self.timers
        return (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Sub)
            and (self.reads_clock(node.left) or self.reads_clock(node.right))
        )


def quality_offences(root: Path) -> list[str]:
    """What makes a test of root/tests flaky or unable to fail, as "path:line: what and what to do"."""
    files = [_TestFile(path, root) for path in sorted((root / "tests").rglob("*.py"))]
    # Helpers that time something (return a duration), and those that return what one of them returns.
    timers: set[tuple[str, str]] = set()
    while more := {key for f in files for key in f.functions if key not in timers and f.returns_duration(key, timers)}:
        timers |= more
    for f in files:
        f.check_timing(timers)
    calls = {key: called for f in files for key, called in f.calls.items()}
    checking = set().union(*(f.checks for f in files))
    # A test checks when it asserts, or calls a function of tests/ that does (or one that calls one...).
    while more := {key for key, called in calls.items() if key not in checking and called & checking}:
        checking |= more
    offences = [offence for f in files for offence in f.offences]
    for f in files:
        offences += [
            f"{f.path}:{line}: {name} checks nothing, so it cannot fail; assert what the user would notice"
            for name, line in f.tests.items()
            if (f.module, name) not in checking
        ]
    return sorted(offences, key=lambda offence: (offence.split(":")[0], int(offence.split(":")[1])))


def test_it_keeps_the_tests_from_flaking_or_checking_nothing():
    offences = quality_offences(ROOT)
    assert offences == [], "\n".join(offences)


SAMPLE_HELPERS = """
def assert_clean(conn):
    assert not conn.leftovers()


def backup_and_check(conn):
    conn.backup()
    assert_clean(conn)


def backup(conn):
    return conn.backup()
"""

SAMPLE_TESTS = """
import time
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from tests.helpers import backup, backup_and_check


def test_it_raises_anything(conn):
    with pytest.raises(Exception, match="gone"):
        conn.get()
    with pytest.raises((ValueError, BaseException)):
        conn.get()


def test_it_names_what_it_raises(conn):
    with pytest.raises(ValueError, match="gone"):
        conn.get()


def test_it_only_calls(conn):
    backup(conn)


def test_it_checks_through_helpers(conn):
    backup_and_check(conn)


def test_it_compares_images(a, b, qemu):
    qemu.run("qemu-img", "compare", a, b)


def test_it_times_a_call(conn):
    started = time.monotonic()
    conn.get()
    elapsed = time.monotonic() - started
    assert elapsed < 5
    assert (datetime.now() - conn.created).total_seconds() <= 1
    assert conn.expires - timezone.now() > timedelta(days=29)


STOP_WITHIN = 30


def stop_and_time(conn):
    started = time.monotonic()
    conn.stop()
    return time.monotonic() - started


def test_it_times_a_helper(conn):
    took = stop_and_time(conn)
    assert took < STOP_WITHIN
    assert conn.stopped(within=STOP_WITHIN)


def test_it_waits_with_a_deadline(conn):
    deadline = time.monotonic() + 30
    while not conn.ready():
        assert time.monotonic() < deadline, f"not ready after {time.monotonic() - deadline + 30:.0f} s"
    assert conn.expires - conn.created == timedelta(days=30)
"""


def test_it_finds_broad_raises_clock_deltas_and_tests_that_check_nothing(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "helpers.py").write_text(SAMPLE_HELPERS)
    (tmp_path / "tests" / "test_sample.py").write_text(SAMPLE_TESTS)
    found = [offence.split(";")[0] for offence in quality_offences(tmp_path)]
    assert found == [
        "tests/test_sample.py:12: pytest.raises(Exception) passes on any error",
        "tests/test_sample.py:14: pytest.raises((ValueError, BaseException)) passes on any error",
        "tests/test_sample.py:23: test_it_only_calls checks nothing, so it cannot fail",
        "tests/test_sample.py:39: asserts a duration on the real clock (elapsed < 5)",
        "tests/test_sample.py:40: asserts a duration on the real clock "
        "((datetime.now() - conn.created).total_seconds() <= 1)",
        "tests/test_sample.py:41: asserts a duration on the real clock "
        "(conn.expires - timezone.now() > timedelta(days=29))",
        "tests/test_sample.py:55: asserts a duration on the real clock (took < STOP_WITHIN)",
    ]
