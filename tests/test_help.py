"""Issue 32 point 4: the CLI's help and the README's flag table say the same thing.

The table is the markdown table under "## Using the CLI" whose header is `| flag | meaning |`;
every flag it names is a flag of `trailcopy copy` (or of another subcommand: `--state-machine`),
every long flag of `copy --help` is in it, and the defaults it states are the help's.
"""

from __future__ import annotations

import re

import pytest

from conftest import REPO

README = (REPO / "README.md").read_text()
# Defaults the table must state (issue 32): a parse that finds none of them checks nothing.
STATED_DEFAULTS = {"--retention-days", "--restore", "--delivery-allowance", "--max-requests", "--max-fetch-mib"}
COPY_WORDS = re.compile(r"\bcop(y|ies|ied|ying)\b", re.I)


# ----------------------------------------------------------------------------- the README's table
def flag_table() -> dict:
    """{(flags of a row): meaning} of the table under "## Using the CLI" (a row may name several flags)."""
    section = re.search(r"^## Using the CLI\n(.*?)(?=^## )", README, flags=re.S | re.M)
    assert section, "README has no `## Using the CLI` section"
    lines = section.group(1).splitlines()
    start = next((i for i, line in enumerate(lines) if re.fullmatch(r"\|\s*flag\s*\|\s*meaning\s*\|", line.strip())),
                 None)
    assert start is not None, "no `| flag | meaning |` table under `## Using the CLI`"
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        first, meaning = cells[0], "|".join(cells[1:])
        names = re.findall(r"`(--[a-z0-9][a-z0-9-]*)[^`]*`", first)
        assert names, f"a flag table row names no flag: {line}"
        for name in names:
            assert all(name not in r for r in rows), f"{name} has two rows"
        rows[tuple(names)] = meaning
    assert rows, "the flag table is empty"
    return rows


def table_flags() -> dict:
    """{flag: meaning of its row}."""
    return {f: meaning for names, meaning in flag_table().items() for f in names}


DEFAULT = re.compile(r"`([\w.-]+)`\s+\(default\)|\bdefault\b:?\s*(`[^`]+`|[^\s,;)]+)?")


def readme_defaults(flags: list, meaning: str) -> dict:
    """{flag: the value its row states as default}: `(default N)`, `(default: N)`, `default `1h``,
    `` `bulk` (default)``. A default described in words (`default: by tier ...`, `default: cores, ...`)
    is no value. A row naming several flags states their defaults in the order it names them."""
    mentions = []
    for m in DEFAULT.finditer(meaning):
        token = m.group(1) or (m.group(2) or "")
        if token.startswith("`"):
            mentions.append(token.strip("`"))
        elif m.group(1) or re.fullmatch(r"\d[\w.]*", token):
            mentions.append(token)
        else:
            mentions.append(None)
    values = [v for v in mentions if v is not None]
    if not values:
        return {}
    if len(flags) == 1:
        return {flags[0]: values[0]}
    assert len(mentions) == len(flags), \
        f"the row of {flags} states defaults {mentions}: cannot tell which is whose\n{meaning}"
    return {f: v for f, v in zip(flags, mentions) if v is not None}


# ----------------------------------------------------------------------------- the help
def run_help(trailcopy, *cmd) -> str:
    r = trailcopy(*cmd, "--help")
    assert r.returncode == 0, r.describe()
    return r.stdout


def help_flags(text: str) -> dict:
    """{long flag: its help text, continuation lines joined} from a clap help page (short or long layout)."""
    flags, current, section = {}, None, False
    for line in text.splitlines():
        if re.fullmatch(r"[A-Z][\w ]*:", line):
            section = line in ("Options:", "Arguments:")
            current = None
            continue
        if not section or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        head = re.match(r"^\s*(-\w, )?(--[a-z0-9][a-z0-9-]*)(?: <[^>]+>)*(?:\.\.\.)?(?:\s{2,}(.*))?$", line)
        if head and indent <= 6:
            current = head.group(2)
            flags[current] = (head.group(3) or "").strip()
        elif current and indent > 6:
            flags[current] = (flags[current] + " " + line.strip()).strip()
    return flags


def help_default(text: str) -> str | None:
    m = re.search(r"\[default: ([^]]*)\]", text)
    return m.group(1).strip() if m else None


def subcommands(trailcopy) -> list:
    text = run_help(trailcopy)
    block = re.search(r"^Commands:\n(.*?)(?:\n\n|\Z)", text, flags=re.S | re.M)
    assert block, text
    return [line.split()[0] for line in block.group(1).splitlines() if line.strip()]


@pytest.fixture(scope="module")
def helps(trailcopy) -> dict:
    """{subcommand: {flag: text}} of every subcommand but clap's `help`."""
    return {cmd: help_flags(run_help(trailcopy, cmd)) for cmd in subcommands(trailcopy) if cmd != "help"}


# ============================================================================ the tests
def test_every_subcommands_help_runs(trailcopy):
    cmds = subcommands(trailcopy)
    assert {"copy", "list", "status", "retry", "failures", "export", "verify", "summary"} <= set(cmds), cmds
    for cmd in cmds:
        if cmd == "help":
            r = trailcopy("help")
            assert r.returncode == 0 and "Usage:" in r.stdout, r.describe()
            continue
        for how in (("--help",), ("-h",)):
            r = trailcopy(cmd, *how)
            assert r.returncode == 0 and "Usage:" in r.stdout and r.stderr == "", r.describe()
        r = trailcopy("help", cmd)
        assert r.returncode == 0 and "Usage:" in r.stdout, r.describe()


def test_every_flag_in_the_readme_table_is_a_flag(helps):
    table = table_flags()
    anywhere = set().union(*(set(f) for f in helps.values()))
    unknown = sorted(f for f in table if f not in helps["copy"] and f not in anywhere)
    assert not unknown, f"the README's flag table names flags no subcommand has: {unknown}"


def test_every_flag_of_copy_is_in_the_readme_table(helps):
    table = table_flags()
    missing = sorted(f for f in helps["copy"] if f not in ("--help", "--version") and f not in table)
    assert not missing, f"`trailcopy copy --help` has flags the README's flag table leaves out: {missing}"


def test_the_readme_table_defaults_are_the_helps(helps):
    stated = {}
    for names, meaning in flag_table().items():
        stated.update(readme_defaults(list(names), meaning))
    assert STATED_DEFAULTS <= set(stated), \
        f"the README's table states no default for {sorted(STATED_DEFAULTS - set(stated))} (found {stated})"
    wrong = []
    for flag, value in sorted(stated.items()):
        text = next((h[flag] for h in (helps["copy"], *helps.values()) if flag in h), None)
        assert text is not None, f"{flag}: in no help"
        shown = help_default(text)
        first = re.split(r"[\s,;]", shown, maxsplit=1)[0] if shown else None
        if first is None or first.lower() != value.lower():
            wrong.append(f"{flag}: README says default {value!r}, help says [default: {shown}]")
    assert not wrong, "\n".join(wrong)


def test_concurrency_help_says_the_default_follows_the_cores(helps):
    text = helps["copy"]["--concurrency"]
    assert "cores" in text, f"--concurrency: {text}"
    assert "cores" in table_flags()["--concurrency"], table_flags()["--concurrency"]


def test_require_verified_is_described_for_each_command(helps):
    verify, copy = helps["verify"]["--require-verified"], helps["copy"]["--require-verified"]
    assert not COPY_WORDS.search(verify), f"`verify --help` describes --require-verified as a copy does: {verify}"
    assert COPY_WORDS.search(copy), f"`copy --help`'s --require-verified does not say what it does to the copy: {copy}"


def test_last_takes_weeks_in_the_help_and_the_readme(helps):
    weeks = re.compile(r"\bw\b|\b\d+w\b")
    for cmd in ("copy", "verify"):
        text = helps[cmd]["--last"]
        assert weeks.search(text), f"`{cmd} --help`'s --last does not mention weeks (w): {text}"
    row = table_flags()["--last"]
    assert weeks.search(row.replace("`", " ")), f"the README's --last row does not mention weeks (w): {row}"
