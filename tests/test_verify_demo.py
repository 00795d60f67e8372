"""The README's verify demo (issue 32 point 6), run as written: `trailcopy verify` on the sample trail
with the test public keys shipped beside it prints what the README shows (exit 0, every file
verified, nothing failed); a copy of the sample with one log file altered fails with DigestMismatch.

The sample's digests are signed by test keys derived from a seed (tests/gen_digests.py's docstring
gives the command); the private keys do not ship, and the command rebuilds the shipped digests and
public-keys file byte for byte.
"""

from __future__ import annotations

import filecmp
import json
import re
import shlex
import shutil
import subprocess

import gen_digests
from conftest import REPO, base_env

README = (REPO / "README.md").read_text()
BINARY = "target/debug/trailcopy"
SAMPLE = "examples/sample-trail"
# The verify command, and the output block after it (prose may come between).
DEMO = re.search(r"^```bash\n(\S+ verify --source examples/sample-trail [^\n]*)\n```\n.*?^```text\n(.*?)^```",
                 README, flags=re.S | re.M)


def demo_argv(source: str = SAMPLE) -> list:
    assert DEMO, "no verify demo in the README (a ```bash block running verify on examples/sample-trail)"
    argv = shlex.split(DEMO.group(1))
    assert argv[0] == BINARY and argv[1] == "verify", argv
    return [source if a == SAMPLE else a for a in argv[1:]]


def run(trailcopy_bin, argv) -> subprocess.CompletedProcess:
    return subprocess.run([trailcopy_bin, *argv], capture_output=True, text=True, cwd=REPO, env=base_env(),
                          stdin=subprocess.DEVNULL, timeout=120)


# The source path differs per clone; the range's start would move only past the retention cutoff.
VARIES = re.compile(r"^(verify \S+: |  range )")


def test_the_readme_shows_what_the_verify_demo_prints(trailcopy_bin):
    p = run(trailcopy_bin, demo_argv())
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    shown = DEMO.group(2)
    want = [line for line in shown.splitlines() if line.strip() and not VARIES.match(line)]
    got = [line for line in p.stdout.splitlines() if line.strip() and not VARIES.match(line)]
    assert got == want, "README's verify demo output is out of date:\n" + "\n".join(got)
    first = p.stdout.splitlines()[0]
    assert first.startswith("verify ") and first.endswith("examples/sample-trail: OK"), first
    assert re.search(r"^  files      (\d+) read: \1 verified, 0 in no digest, 0 only in failed digests, "
                     r"0 altered or damaged$", p.stdout, flags=re.M), p.stdout
    assert re.search(r"^  digests    \d+ verified, 0 failed ", p.stdout, flags=re.M), p.stdout
    assert "  missing    0 log files" in p.stdout, p.stdout


def test_the_sample_with_one_log_file_altered_fails_the_demo(trailcopy_bin, tmp_path):
    copy = tmp_path / "sample-trail"
    shutil.copytree(REPO / SAMPLE, copy)
    victim = sorted(str(p.relative_to(copy)) for p in copy.glob("AWSLogs/*/*/CloudTrail/*/*/*/*/*.json.gz"))[5]
    gen_digests.alter_log_file(str(copy), victim)
    p = run(trailcopy_bin, demo_argv(str(copy)))
    assert p.returncode == 1, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    failures = re.findall(r"^(\w+)  (\S+)$", p.stdout, flags=re.M)
    assert [(t, loc[loc.index("AWSLogs/"):]) for t, loc in failures] == [("DigestMismatch", victim)], p.stdout
    assert ": FAILED" in p.stdout.splitlines()[0] and "1 altered or damaged" in p.stdout, p.stdout


def documented_command() -> list:
    """tests/gen_digests.py's docstring: the command that signed the sample."""
    m = re.search(r"^\s+python3 tests/gen_digests.py (--trail examples/sample-trail .*?)\n(?=\S|\n)",
                  gen_digests.__doc__, flags=re.S | re.M)
    assert m, "gen_digests.py's docstring does not say how the sample trail was signed"
    return shlex.split(m.group(1).replace("\\\n", " "))


def test_the_documented_command_rebuilds_the_shipped_digests_and_keys(tmp_path):
    argv = documented_command()
    keys_out = argv[argv.index("--keys-out") + 1]
    assert f"--digest-public-keys {keys_out}" in DEMO.group(1), "the demo uses the keys the command writes"
    copy = tmp_path / "sample-trail"
    shutil.copytree(REPO / SAMPLE, copy)
    argv[argv.index("--trail") + 1] = str(copy)
    argv[argv.index("--keys-out") + 1] = str(tmp_path / "keys.json")
    gen_digests.main(argv)
    assert filecmp.cmp(tmp_path / "keys.json", REPO / keys_out, shallow=False), "the public keys differ"
    shipped = sorted(p.relative_to(REPO / SAMPLE) for p in (REPO / SAMPLE).rglob("*") if p.is_file())
    rebuilt = sorted(p.relative_to(copy) for p in copy.rglob("*") if p.is_file())
    assert shipped == rebuilt, sorted(set(map(str, shipped)) ^ set(map(str, rebuilt)))
    changed = [str(p) for p in shipped if (REPO / SAMPLE / p).read_bytes() != (copy / p).read_bytes()]
    assert changed == [], changed


def test_no_private_key_ships():
    for path in (REPO / "examples").rglob("*"):
        if path.is_file() and not path.name.endswith(".gz"):
            assert b"PRIVATE KEY" not in path.read_bytes(), path


def test_the_public_keys_are_what_list_public_keys_prints():
    keys = json.loads((REPO / "examples" / "sample-trail-public-keys.json").read_text())["PublicKeyList"]
    assert len(keys) == 2  # a key per region (us-east-1, eu-west-1)
    for k in keys:
        assert set(k) == {"Value", "ValidityStartTime", "ValidityEndTime", "Fingerprint"}, k
