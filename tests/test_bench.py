"""What the benches (bench/) check before they print a figure: an impossible one stops them."""

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024**2


@pytest.fixture(scope="module")
def checks():
    # bench/ is a folder of scripts, not a package: its helpers load as the scripts load them.
    spec = importlib.util.spec_from_file_location("bench_checks", ROOT / "bench" / "checks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def volume(tmp_path):
    """A volume as vdsm lays it out on a file domain: the image, its `.meta` beside it."""
    image = tmp_path / "images" / "disk" / "volume"
    image.parent.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), str(64 * MiB)], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 0 1M", str(image)], check=True, capture_output=True)
    image.with_suffix(".meta").write_text("CAP=67108864\nFORMAT=COW\nVOLTYPE=LEAF\nEOF\n")
    return image


def test_it_refuses_to_measure_the_meta_file_beside_a_volume(checks, volume):
    assert checks.source_image(volume, fmt="qcow2", virtual_size=64 * MiB) >= MiB
    with pytest.raises(checks.ImpossibleFigure, match=r"the format of volume.meta is 'raw', expected 'qcow2'"):
        checks.source_image(volume.with_suffix(".meta"), fmt="qcow2", virtual_size=64 * MiB)


def test_it_refuses_a_copy_unlike_its_source(checks, volume, tmp_path):
    copy = tmp_path / "copy.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(volume), str(copy)], check=True)
    checks.same_image("a faithful copy", volume, copy)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 8 0 4k", str(copy)], check=True, capture_output=True)
    with pytest.raises(checks.ImpossibleFigure, match="a changed copy: .* differ"):
        checks.same_image("a changed copy", volume, copy)


@pytest.mark.parametrize("value", [0, -0.3, math.nan, math.inf])
def test_it_refuses_a_figure_that_cannot_be(checks, value, tmp_path, monkeypatch):
    table = tmp_path / "ratios.jsonl"
    monkeypatch.setenv("BENCH_RATIOS", str(table))
    with pytest.raises(checks.ImpossibleFigure, match="cost per changed MiB"):
        checks.ratio("backup", "cost per changed MiB", value, 1.0)
    with pytest.raises(checks.ImpossibleFigure, match="bytes read .* is below the bytes changed"):
        checks.at_least("bytes read", 10 * MiB, "the bytes changed", 11 * MiB)
    assert not table.exists(), "an impossible figure is never recorded"
    assert checks.ratio("backup", "full / peer", 3.0, 2.0) == 1.5
    assert '"label": "full / peer", "value": 1.5' in table.read_text()


def test_it_runs_no_bench_it_does_not_know():
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run_all.py"), "--only", "backup,tape"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "no bench named tape; the benches are consolidate, retention" in result.stderr


def test_it_fits_the_incrementals_cost_and_stops_on_times_that_do_not_grow_with_the_changes(checks):
    MiB = 1024**2
    fixed, per_byte = checks.incrementals_cost([(1 * MiB, 0.6), (2 * MiB, 0.7), (4 * MiB, 0.9)])
    assert math.isclose(fixed, 0.5) and math.isclose(per_byte * MiB, 0.1)
    with pytest.raises(checks.ImpossibleFigure) as noise:
        checks.incrementals_cost([(1 * MiB, 1.64), (8 * MiB, 1.43), (64 * MiB, 1.04)])
    assert "do not grow with the bytes changed" in str(noise.value)


@pytest.mark.slow
def test_it_benches_file_level_restore_at_a_short_size_and_leaves_nothing_mounted():
    # bench/files.py at its goals' sizes takes minutes (100,000 files, a 1 GiB file): here a folder of
    # five pages and a 16 MiB file, the page cache kept (other tests share the machine).
    args = ["--files", "1000", "--file-mib", "16", "--runs", "1", "--warm"]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BENCH_RATIOS")}
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "files.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    for figure in (
        r"^browse to the first listing: \d+\.\d+s \(goal: under 5 s",
        r"^folder of 1,000 files, pages of 200: first \(cold\) \d+\.\d+s, next \d+\.\d+s, last \d+\.\d+s",
        r"^16 MiB file: download \d+ MiB/s, cp \d+ MiB/s \(medians\); the download at \d+\.\d+x",
    ):
        assert re.search(figure, run.stdout, re.MULTILINE), f"no {figure!r} in:\n{run.stdout[-4000:]}"
    assert "bench-files-" not in Path("/proc/self/mountinfo").read_text()
