"""A full disk costs at most the run in flight: training keeps its last checkpoint for --resume, sweep workers stop
with one line and the sweep resumes once space is freed. Each test mounts a small tmpfs (root only; skipped
elsewhere with the reason)."""

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {made.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path) -> Path:
    """Write until the disk is full; returns the filler to delete."""
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


def microgpt(*args, **popen):
    return subprocess.Popen([sys.executable, "-u", "-m", "microgpt", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def test_training_on_a_full_disk_keeps_its_checkpoint_and_resumes(small_disk, names_path):
    proc = microgpt("train", "--data", str(names_path), "-s", "4000", "-b", "4", "--eval-every", "500",
                    "--checkpoint-every", "200", "--samples", "2", "--out-dir", str(small_disk), "--name", "r")
    run_dir = small_disk / "r"
    deadline = time.time() + 120
    while not (run_dir / "resume.pt").is_file() and time.time() < deadline:
        time.sleep(0.05)
    filler = fill(small_disk)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, out + err
    assert err.count("\n") == 1 and "Traceback" not in err and f"--resume {run_dir}" in err, err
    assert (run_dir / "resume.pt").is_file() and not (run_dir / "summary.json").exists()
    assert not list(run_dir.glob(".*.tmp"))  # no half-written file left behind
    filler.unlink()
    again = microgpt("train", "--resume", str(run_dir))
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert not (run_dir / "resume.pt").exists() and '"state": "complete"' in (run_dir / "summary.json").read_text()


def test_a_run_that_cannot_write_its_first_record_leaves_no_directory(small_disk, names_path):
    filler = fill(small_disk)
    proc = microgpt("train", "--data", str(names_path), "-s", "5", "--out-dir", str(small_disk), "--name", "r")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and err.count("\n") == 1 and "No space left" in err, err
    assert not (small_disk / "r").exists()
    filler.unlink()


def test_a_sweep_on_a_full_disk_stops_with_one_line_per_worker_and_resumes(small_disk, names_path):
    args = ["sweep", "--data", str(names_path), "--out-dir", str(small_disk), "--name", "f", "--workers", "1",
            "--grid", "lr=0.002,0.004,0.006,0.008,0.01", "-s", "300", "--eval-every", "100", "--samples", "0"]
    proc = microgpt(*args)
    results = small_disk / "f" / "results.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (results.is_file() and len(results.read_text().splitlines()) >= 2):
        time.sleep(0.05)
    filler = fill(small_disk)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, out + err
    assert "Traceback" not in out + err and "No space left on device" in err
    assert all(line.startswith(("worker ", "microgpt: error")) for line in err.strip().splitlines()), err
    filler.unlink()
    again = microgpt(*args)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, out + err
    with results.open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["lr"] for r in rows) == ["0.002", "0.004", "0.006", "0.008", "0.01"]
    assert all(r["state"] == "complete" for r in rows)
    assert os.path.isdir(small_disk / "f" / "runs")
