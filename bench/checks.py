"""What every bench checks of its inputs and outputs before it prints a figure, and its ratios.

A bench measures what it thinks it measures only if its inputs are what it meant (an image with
data in it, not a `.meta` file next to it) and its outputs are right (the copy equals the source,
an incremental read at least what changed). A figure that cannot be (nothing allocated, a
duration of zero, a negative cost, a ratio that is not a number) stops the bench with an error
naming it, rather than printing it: `impossible()` raises SystemExit.

Ratios go through `ratio()`, which checks them and, when `make bench` runs the benches
(bench/run_all.py sets BENCH_RATIOS to a file), records them for its one table.
"""

import json
import math
import os
import subprocess
from pathlib import Path

MiB = 1024**2


MEASURED_ELSE = "the bench measured something else than it meant to"


class ImpossibleFigure(SystemExit):
    """A bench's input or output that cannot be right: the bench stops, its figures unprinted."""

    def __init__(self, what: str, why: str = MEASURED_ELSE):
        super().__init__(f"impossible figure: {what}; {why}")


def impossible(what: str, why: str = MEASURED_ELSE) -> None:
    raise ImpossibleFigure(what, why)


def positive(what: str, value: float, *, why: str = MEASURED_ELSE) -> float:
    """A duration, a size, a count that must be a finite number above zero."""
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        impossible(f"{what} is {value!r}, not a number above zero", why)
    return value


def at_least(what: str, value: float, floor_what: str, floor: float) -> float:
    """`value` cannot be below `floor` (bytes read below bytes changed)."""
    if not value >= floor:
        impossible(f"{what} ({value!r}) is below {floor_what} ({floor!r})")
    return value


def at_most(what: str, value: float, ceiling_what: str, ceiling: float) -> float:
    """`value` cannot exceed `ceiling` (bytes allocated above the virtual size)."""
    if not value <= ceiling:
        impossible(f"{what} ({value!r}) is above {ceiling_what} ({ceiling!r})")
    return value


def equal(what: str, value, expected) -> None:
    if value != expected:
        impossible(f"{what} is {value!r}, expected {expected!r}")


def image_info(path: Path | str, *, shared: bool = False) -> dict:
    """`qemu-img info` of an image the bench reads: refused when it is no image (a `.meta` file
    reads as a tiny RAW image, so the caller checks the format and size it expects)."""
    args = ["qemu-img", "info", "--output=json", *(["-U"] if shared else []), str(path)]
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode:
        impossible(f"{path} is not an image qemu-img can read: {' '.join(result.stderr.split())}")
    return json.loads(result.stdout)


def source_image(path: Path, *, fmt: str, virtual_size: int) -> int:
    """Check the image a bench starts from (its format and virtual size as the engine says) and
    return its allocated bytes, which must be above zero."""
    info = image_info(path)
    equal(f"the format of {path.name}", info["format"], fmt)
    equal(f"the virtual size of {path.name}", info["virtual-size"], virtual_size)
    allocated = path.stat().st_blocks * 512
    positive(f"the bytes allocated to {path.name}", allocated)
    at_most(f"the bytes allocated to {path.name}", allocated, "its virtual size + 1%", virtual_size * 1.01)
    return allocated


def same_image(what: str, a: Path | str, b: Path | str, *, shared: bool = False) -> None:
    """`qemu-img compare`: the guest sees the same bytes in both (formats detected, backing chains
    followed; `shared` for an image a running qemu holds)."""
    args = ["qemu-img", "compare", *(["-U"] if shared else []), str(a), str(b)]
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode:
        impossible(f"{what}: {a} and {b} differ ({' '.join((result.stdout + result.stderr).split())})")


def same_bytes(what: str, a: Path, b: Path) -> None:
    """Two files byte for byte (a copy of a volume file): `cmp`."""
    result = subprocess.run(["cmp", "--silent", str(a), str(b)])
    if result.returncode:
        impossible(f"{what}: {a} and {b} differ")


def ratio(bench: str, label: str, numerator: float, denominator: float, *, goal: str = "") -> float:
    """numerator / denominator, both checked to be above zero, recorded for `make bench`'s table."""
    positive(f"{label}: its numerator", numerator)
    positive(f"{label}: its denominator", denominator)
    value = numerator / denominator
    record(bench, label, value, goal=goal)
    return value


def record(bench: str, label: str, value: float, *, goal: str = "", unit: str = "x") -> None:
    """A figure of `make bench`'s table (ratios, and the few figures that are no ratio, with a unit)."""
    if not isinstance(value, int | float) or not math.isfinite(value):
        impossible(f"{label} is {value!r}")
    table = os.environ.get("BENCH_RATIOS")
    if table:
        with open(table, "a") as f:
            f.write(json.dumps({"bench": bench, "label": label, "value": value, "unit": unit, "goal": goal}) + "\n")


def incrementals_cost(incrementals: list[tuple[float, float]]) -> tuple[float, float]:
    """The incrementals' fixed cost (s) and cost per changed byte, fitted by least squares over
    (bytes changed, seconds) pairs; both must be above zero, or the times are noise (each
    incremental's time then mostly the machine's other work) and the bench stops, saying so."""
    n = len(incrementals)
    mean_x = sum(x for x, _ in incrementals) / n
    mean_y = sum(y for _, y in incrementals) / n
    spread = sum((x - mean_x) ** 2 for x, _ in incrementals)
    if spread == 0:
        impossible("the incrementals' costs", "every incremental changed as many bytes: vary the changes")
    per_byte = sum((x - mean_x) * (y - mean_y) for x, y in incrementals) / spread
    fixed = mean_y - per_byte * mean_x
    noise = (
        "the incrementals' times ("
        + ", ".join(f"{t:.2f}s for {c / MiB:.0f} MiB" for c, t in incrementals)
        + ") do not grow with the bytes changed: other work on this machine outweighed the changes; "
        "run the bench again when the machine is quiet"
    )
    positive("the incrementals' fixed cost (s)", fixed, why=noise)
    positive("the incrementals' cost per changed byte", per_byte, why=noise)
    return fixed, per_byte
