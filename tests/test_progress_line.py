"""Issue 32, point 1: the progress line a user sees on a terminal, read from a real pseudo-terminal
80 columns wide (the line is drawn only when stderr is a terminal).

Each frame indicatif draws is taken apart: the totals (bytes and files) are known when planning
ends and never change, what is done never goes back, there is no ETA before anything is read,
every frame fits in one 80-column line, and the line moves per file (many distinct counts on a
copy of two work items), from a local folder and from S3 (moto)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import termios
import time

import pytest

from conftest import base_env, source_dir

COLUMNS = 80
FRAME = re.compile(r"(\d+)% ([\d.]+)/([\d.]+) (B|kB|MB|GB) · ([\d,]+)/([\d,]+) files?")
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_terminal(binary: str, *args, env: dict, columns: int = COLUMNS, timeout: float = 120):
    """Runs binary under a pseudo-terminal `columns` wide; returns (exit code, visible frames)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal is its stdin, stdout and stderr
        os.execve(binary, [binary, *map(str, args)], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    text = out.decode("utf-8", "replace")
    # indicatif redraws a line with \r and erase-line sequences; each piece between them is a frame.
    frames = [f for f in re.split(r"\r|\n|\x1b\[2K|\x1b\[1A|\x1b\[1B|\x1b\[0J", text)]
    frames = [ANSI.sub("", f).rstrip() for f in frames]
    return os.waitstatus_to_exitcode(status), [f for f in frames if f.strip()]


@pytest.fixture(scope="module")
def trail(make_trail):
    # Two work items (one date each) of 120 files: enough frames at 5 per second in a debug build.
    return make_trail("progress-line", seed=11, accounts=1, regions="us-east-1", start_day="2026-11-01", days=2,
                      files_per_day=120, events_per_file=300)


def copying_frames(frames: list[str]) -> list[tuple[int, str, int, int, str]]:
    """(percent, bytes total with unit, files done, files total, the frame) of each frame of the copy."""
    out = []
    for f in frames:
        m = FRAME.search(f)
        if m:
            pct, _, total, unit, done, files = m.groups()
            out.append((int(pct), f"{total} {unit}", int(done.replace(",", "")), int(files.replace(",", "")), f))
    return out


def check_frames(frames: list[str], files_listed: int):
    assert frames, "nothing drawn on the terminal"
    # The progress line's frames (the report printed after it is ordinary output).
    for f in [f for f in frames if f[:1] in SPINNER]:
        assert len(f) < COLUMNS, f"a frame wider than the terminal wraps to two lines: {f!r} ({len(f)})"
    drawn = copying_frames(frames)
    assert len(drawn) >= 3, "the line did not move while copying:\n" + "\n".join(frames)
    totals = {(t, n) for _, t, _, n, _ in drawn}
    assert len(totals) == 1, f"the totals changed while copying: {sorted(totals)}"
    assert drawn[0][3] == files_listed, f"files total {drawn[0][3]}, {files_listed} listed"
    for (p0, _, d0, _, f0), (p1, _, d1, _, f1) in zip(drawn, drawn[1:]):
        assert p1 >= p0 and d1 >= d0, f"the line went back:\n{f0}\n{f1}"
    for pct, _, done, _, f in drawn:
        if done == 0:
            assert "ETA" not in f and "/s" not in f, f"an ETA or a rate before anything was read: {f}"
    assert len({d for _, _, d, _, _ in drawn}) >= 3, "the line moves per file, not per work item"
    assert any("ETA" in f and "B/s" in f for _, _, _, _, f in drawn), "no rate or ETA once reading:\n" + "\n".join(
        frames)


def test_local_copy_progress_line(trailcopy_bin, trail, tmp_path):
    store = tmp_path / "store"
    code, frames = run_in_terminal(trailcopy_bin, "copy", "--source", source_dir(trail), "--store", store,
                                   "--start", "2026-11-01", "--end", "2026-11-03", "--concurrency", "1",
                                   env=base_env())
    assert code == 0, "\n".join(frames)
    assert any("planning" in f for f in frames), "no planning spinner"
    check_frames(frames, files_listed=len(trail["files"]))
    assert any("COMPLETED" in f for f in frames), "the report follows the line"


def test_s3_copy_progress_line(trailcopy_bin, trail, moto_s3, tmp_path):
    moto_s3.client().create_bucket(Bucket="progress-line")
    moto_s3.upload_dir("progress-line", source_dir(trail))
    env = base_env()
    env.update(moto_s3.env)
    code, frames = run_in_terminal(trailcopy_bin, "copy", "--source", "s3://progress-line", "--store",
                                   tmp_path / "store", "--start", "2026-11-01", "--end", "2026-11-03",
                                   "--concurrency", "1", env=env)
    assert code == 0, "\n".join(frames)
    check_frames(frames, files_listed=len(trail["files"]))


def test_nothing_to_read_is_not_a_full_bar(trailcopy_bin, trail, tmp_path):
    code, frames = run_in_terminal(trailcopy_bin, "copy", "--source", source_dir(trail), "--store",
                                   tmp_path / "store", "--start", "2026-10-01", "--end", "2026-10-02",
                                   env=base_env())
    assert code == 0, "\n".join(frames)
    assert not any("100%" in f or "ETA" in f for f in frames), "\n".join(frames)


def test_no_line_when_stderr_is_not_a_terminal(trailcopy, trail, tmp_path):
    r = trailcopy("copy", "--source", source_dir(trail), "--store", tmp_path / "store",
                  "--start", "2026-11-01", "--end", "2026-11-03")
    assert r.returncode == 0, r.describe()
    assert "%" not in r.stderr and "\x1b[" not in r.stderr and "\r" not in r.stderr, r.stderr
