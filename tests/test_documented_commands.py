"""Every shell command of README.md and docs/*.md works as written.

Commands are read from fenced code blocks marked bash, sh, shell or console, or unmarked: one
command a line, backslash continuations joined, comments skipped; in a block with ``$ `` prompts
only the prompted lines are commands and the lines after one are its expected output; in an
unmarked block without prompts only lines starting with a known program are (the others are
diagrams and formulas). Each command is checked as written, without doing its work:

- ``snakemake ...``: a dry run (``-n``) of the Snakefile in a scratch directory (holding a link to
  the committed ``cache/`` for ``render_from=cache``), with the Hugging Face libraries offline;
- ``make X``: ``make -n X``, and each snakemake command of its recipe as above;
- ``python -m rebel <stage> ...``: parsed by the CLI's own argument parser (stage and flags exist,
  required flags given);
- what only installs or fetches (``pip install``, ``git clone``): skipped, by an explicit allow-list.

Any other command fails the test until it gets a check or joins the allow-list. A command shown with
its output must print that output's first line (up to a trailing ``...``).

``REBEL_DOCS_REV=<git revision>`` checks the documents of that revision instead of the work tree
(``REBEL_DOCS_REV=HEAD~1 pytest tests/test_documented_commands.py``).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_BLOCKS = {"bash", "sh", "shell", "console", ""}
PROGRAMS = {"snakemake", "make", "python", "python3", "pip", "git"}
# Commands that only install or fetch: nothing of the harness to check without doing them.
NOT_CHECKED = {("pip", "install"), ("git", "clone")}
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
SNAKEMAKE_TIMEOUT_S = 300


@dataclass(frozen=True)
class Command:
    where: str
    """file:line of the command's first line."""
    text: str
    expected: str | None = None
    """First line of the output shown after a ``$`` prompt, if any."""


def extract_commands(markdown: str, name: str) -> list[Command]:
    """The shell commands of the fenced code blocks of ``markdown`` (see the module docstring)."""
    lines, commands, i = markdown.splitlines(), [], 0
    while i < len(lines):
        opening = re.match(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)", lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, language = len(opening[1]), opening[2], opening[3].lower()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if language in SHELL_BLOCKS:
            commands += _block_commands(
                [line[indent:] if line[:indent].isspace() else line.lstrip() for line in lines[i + 1 : end]],
                language,
                name,
                i + 2,
            )
        i = end + 1
    return commands


def _block_commands(block: list[str], language: str, name: str, first_line: int) -> list[Command]:
    logical: list[tuple[int, str]] = []  # (line number, text) with continuations joined
    pending: tuple[int, str] | None = None
    for number, line in enumerate(block, first_line):
        if pending is not None:
            pending = (pending[0], pending[1] + " " + line.strip())
        else:
            pending = (number, line.rstrip())
        if pending[1].endswith("\\"):
            pending = (pending[0], pending[1][:-1].rstrip())
            continue
        logical.append(pending)
        pending = None
    if pending is not None:
        logical.append(pending)
    prompted = any(text.startswith("$ ") for _, text in logical)
    commands: list[Command] = []
    for index, (number, text) in enumerate(logical):
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if prompted:
            if not stripped.startswith("$ "):
                continue  # output of the command above
            output = next((t.strip() for _, t in logical[index + 1 :] if t.strip()), None)
            if output is not None and output.startswith("$ "):
                output = None
            commands.append(Command(f"{name}:{number}", stripped[2:].strip(), output))
        elif language or stripped.split()[0] in PROGRAMS:
            commands.append(Command(f"{name}:{number}", stripped))
    return commands


def document_text(path: Path) -> str:
    revision = os.environ.get("REBEL_DOCS_REV")
    if not revision:
        return path.read_text(encoding="utf-8")
    return subprocess.run(
        ["git", "show", f"{revision}:{path.relative_to(REPO)}"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout


def documented_commands() -> list[Command]:
    return [
        c
        for path in DOCUMENTS
        if path.is_file()
        for c in extract_commands(document_text(path), str(path.relative_to(REPO)))
    ]


def split_commands(text: str) -> list[list[str]]:
    """``text`` as argument vectors: comments dropped, split at ``&&``, ``||`` and ``;``, leading
    ``NAME=value`` assignments removed."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split, lexer.commenters = True, "#"
    argvs, current = [], []
    for token in lexer:
        if token in {"&&", "||", ";"}:
            argvs.append(current)
            current = []
        else:
            current.append(token)
    argvs.append(current)
    return [
        argv[next((i for i, a in enumerate(argv) if not re.match(r"^\w+=", a)), len(argv)) :] for argv in argvs if argv
    ]


_dry_runs: dict[tuple[str, ...], subprocess.CompletedProcess] = {}


def snakemake_dry_run(argv: list[str], workdir: Path) -> subprocess.CompletedProcess:
    """``argv`` (a snakemake command as written) as a dry run in ``workdir``, run from the repository
    (relative --configfile paths as a user would give them); the result is kept per command."""
    key = tuple(argv)
    if key not in _dry_runs:
        link = workdir / "cache"
        if not link.exists():
            link.symlink_to(REPO / "cache")  # render_from=cache is relative to the working directory
        full = [
            *argv,
            *([] if {"-n", "--dry-run", "--dryrun"} & set(argv) else ["-n"]),
            "--directory",
            str(workdir),
            "--snakefile",
            str(REPO / "Snakefile"),
        ]
        _dry_runs[key] = subprocess.run(
            full, cwd=REPO, capture_output=True, text=True, env=os.environ | OFFLINE, timeout=SNAKEMAKE_TIMEOUT_S
        )
    return _dry_runs[key]


def check_rebel_cli(argv: list[str]) -> str | None:
    from rebel.cli import _parser

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            _parser().parse_args(argv)
    except SystemExit as exc:
        return f"the CLI's parser refuses it (exit {exc.code}): {stderr.getvalue().strip()}"
    return None


def check(command: Command, workdir: Path) -> str | None:
    """None when ``command`` works as written, else why not."""
    for argv in split_commands(command.text):
        program = Path(argv[0]).name
        if tuple(argv[:2]) in NOT_CHECKED:
            continue
        if program == "snakemake":
            result = snakemake_dry_run(argv, workdir)
            output = result.stdout + result.stderr
            if command.expected is not None:
                expected = command.expected.removesuffix("...").strip()
                if expected not in output:
                    return f"output does not show {expected!r}:\n{output[-2000:]}"
            elif result.returncode != 0:
                return f"dry run failed (exit {result.returncode}):\n{output[-2000:]}"
        elif program == "make":
            result = subprocess.run(["make", "-n", *argv[1:]], cwd=REPO, capture_output=True, text=True)
            if result.returncode != 0:
                return f"make -n failed (exit {result.returncode}): {result.stderr.strip()}"
            for line in result.stdout.splitlines():
                for recipe in split_commands(line):
                    if Path(recipe[0]).name == "snakemake":
                        dry = snakemake_dry_run(recipe, workdir)
                        if dry.returncode != 0:
                            return f"recipe line {line!r}: dry run failed:\n{(dry.stdout + dry.stderr)[-2000:]}"
        elif program in {"python", "python3"} and argv[1:3] == ["-m", "rebel"]:
            problem = check_rebel_cli(argv[3:])
            if problem:
                return problem
        else:
            return f"no check for {' '.join(argv[:2])!r}: give it one or add it to NOT_CHECKED"
    return None


COMMANDS = documented_commands()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("documented")


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(
            c, id=c.where, marks=[pytest.mark.slow] if re.match(r"\s*(\w+=\S*\s+)*(snakemake|make)\b", c.text) else []
        )
        for c in COMMANDS
    ],
)
def test_documented_command_works_as_written(command, workdir):
    problem = check(command, workdir)
    assert problem is None, f"{command.where}: {command.text}\n{problem}"


def test_the_documents_show_commands():
    assert len(COMMANDS) >= 10
    assert any(c.text.startswith("snakemake") and "--configfile" in c.text for c in COMMANDS)


def test_extraction():
    markdown = "\n".join(
        [
            "```bash",
            "make table1   # sets up .venv",
            "# a comment",
            "python -m rebel figure2 --benchmarks a \\",
            "    b --png c",
            "```",
            "",
            "```",
            "data ─► sft",
            "snakemake --cores 1 all",
            "```",
            "",
            "```",
            "$ snakemake -n --config x=1 ...",
            "config error: ...",
            "```",
            "",
            "   ```bash",
            "   pip install -e '.[paper]' && snakemake --cores all",
            "   ```",
            "",
            "```python",
            "print('not shell')",
            "```",
            "```yaml",
            "a: 1",
            "```",
        ]
    )
    assert extract_commands(markdown, "X.md") == [
        Command("X.md:2", "make table1   # sets up .venv"),
        Command("X.md:4", "python -m rebel figure2 --benchmarks a b --png c"),
        Command("X.md:10", "snakemake --cores 1 all"),
        Command("X.md:14", "snakemake -n --config x=1 ...", "config error: ..."),
        Command("X.md:19", "pip install -e '.[paper]' && snakemake --cores all"),
    ]
    assert split_commands('PATH="/x:$PATH" snakemake --cores all t  # comment') == [
        ["snakemake", "--cores", "all", "t"]
    ]
    assert split_commands("pip install -e '.[test]' && snakemake -n") == [
        ["pip", "install", "-e", ".[test]"],
        ["snakemake", "-n"],
    ]


def test_checks_catch_what_the_old_readme_had(workdir):
    """Snakemake 9's --configfile takes several files: the target after it is read as a config file
    (not found before a first run; 'keys at top level' once tables/table1.csv exists)."""
    bad = check(
        Command("old", "snakemake --cores all --configfile workflow/configs/smoke.yaml tables/table1.csv"), workdir
    )
    assert bad is not None and bad.startswith("dry run failed")
    assert "tables/table1.csv" in bad or "keys at top level" in bad
    assert (
        check(
            Command("new", "snakemake --cores all --configfile=workflow/configs/smoke.yaml tables/table1.csv"), workdir
        )
        is None
    )
    assert "refuses" in check(Command("x", "python -m rebel train --config C --lr 1"), workdir)
    assert "refuses" in check(Command("x", "python -m rebel bogus-stage"), workdir)
    assert "no check for" in check(Command("x", "curl http://example.com"), workdir)
