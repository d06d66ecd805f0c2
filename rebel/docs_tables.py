"""Fill the generated-table blocks of README.md and docs/*.md from the rendered tables.

A block is delimited by two HTML comments, invisible on GitHub::

    <!-- BEGIN generated: tables/table1.md#table1 -->
    ...                                 (rewritten, never edited by hand)
    <!-- END generated -->

The name after ``generated:`` is a file relative to the tables root (default: the repository root,
where ``make figures-from-cache`` writes ``tables/``). Without a fragment the whole file goes into the
block; ``#table2``, ``#list1``, ``#paragraph1``, ``#code1`` or ``#heading1`` take only the N-th
(1-based) table, bullet list, paragraph, fenced code block or heading of the file (the file read as
chunks separated by blank lines).

    python -m rebel.docs_tables                  # rewrite every block from ./tables/...
    python -m rebel.docs_tables --check          # exit 1 naming every stale block; write nothing
    python -m rebel.docs_tables --tables DIR     # read the tables from DIR/tables/... instead

Standard library only (no torch), so it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BEGIN = re.compile(r"^<!-- BEGIN generated: (?P<spec>\S+) -->\s*$")
END = re.compile(r"^<!-- END generated -->\s*$")
SELECTOR = re.compile(r"^(?P<kind>table|list|paragraph|code|heading)(?P<index>[1-9][0-9]*)$")
RENDER_HINT = "render the tables first: make figures-from-cache"


class DocsTablesError(Exception):
    """A malformed block or a source that cannot be read (the message names the document and line)."""


@dataclass(frozen=True)
class Block:
    document: str
    line: int
    """1-based line of the BEGIN marker."""
    spec: str
    """What follows ``generated:``: ``path`` or ``path#kindN``."""
    begin: int
    end: int
    """0-based indices of the BEGIN and END marker lines."""

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}: block '{self.spec}'"


def find_blocks(text: str, document: str) -> list[Block]:
    """The generated blocks of ``text``, in order; a BEGIN without its END (or a stray END) is an error."""
    lines, blocks, open_block = text.splitlines(), [], None
    for index, line in enumerate(lines):
        begin, end = BEGIN.match(line), END.match(line)
        if begin:
            if open_block is not None:
                raise DocsTablesError(
                    f"{document}:{open_block[0] + 1}: block '{open_block[1]}' has no "
                    f"'<!-- END generated -->' before the next BEGIN on line {index + 1}"
                )
            open_block = (index, begin["spec"])
        elif end:
            if open_block is None:
                raise DocsTablesError(f"{document}:{index + 1}: '<!-- END generated -->' without a BEGIN")
            blocks.append(Block(document, open_block[0] + 1, open_block[1], open_block[0], index))
            open_block = None
        elif line.lstrip().startswith("<!-- BEGIN generated"):
            raise DocsTablesError(
                f"{document}:{index + 1}: malformed marker {line.strip()!r}; "
                f"expected '<!-- BEGIN generated: tables/NAME.md[#table1] -->'"
            )
    if open_block is not None:
        raise DocsTablesError(
            f"{document}:{open_block[0] + 1}: block '{open_block[1]}' has no '<!-- END generated -->'"
        )
    return blocks


def chunks(markdown: str) -> list[tuple[str, str]]:
    """``markdown`` as (kind, text) chunks separated by blank lines; a fenced code block is one chunk."""
    result, current, fence = [], [], None
    for line in markdown.splitlines():
        line = line.rstrip()
        stripped = line.lstrip()
        if fence is not None:
            current.append(line)
            if stripped.startswith(fence):
                fence = None
            continue
        if not stripped:
            if current:
                result.append(current)
                current = []
            continue
        opening = re.match(r"(`{3,}|~{3,})", stripped)
        if opening and not current:
            fence = opening[1]
        current.append(line)
    if current:
        result.append(current)
    return [(_kind(chunk[0].lstrip()), "\n".join(chunk)) for chunk in result]


def _kind(first: str) -> str:
    if first.startswith("|"):
        return "table"
    if first.startswith(("```", "~~~")):
        return "code"
    if first.startswith("#"):
        return "heading"
    if re.match(r"([-*+]|\d+[.)])\s", first):
        return "list"
    return "paragraph"


def render(spec: str, tables: Path, where: str = "") -> str:
    """The text a block with ``spec`` holds, read from under ``tables`` (without surrounding blank lines)."""
    where = where or f"block '{spec}'"
    name, _, fragment = spec.partition("#")
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise DocsTablesError(f"{where}: the source must be a path inside the tables root, not {name!r}")
    source = tables / name
    if not source.is_file():
        raise DocsTablesError(f"{where}: source file {source} does not exist ({RENDER_HINT})")
    text = source.read_text(encoding="utf-8")
    if not fragment:
        return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())
    selector = SELECTOR.match(fragment)
    if not selector:
        raise DocsTablesError(
            f"{where}: unknown selector '#{fragment}'; use #tableN, #listN, #paragraphN, #codeN or #headingN (N from 1)"
        )
    kind, index = selector["kind"], int(selector["index"])
    found = [chunk for chunk_kind, chunk in chunks(text) if chunk_kind == kind]
    if index > len(found):
        raise DocsTablesError(f"{where}: {source} has {len(found)} {kind}(s), no {kind} {index}")
    return found[index - 1]


def fill(text: str, document: str, tables: Path) -> tuple[str, list[Block]]:
    """``text`` with every block rewritten from ``tables``, and the blocks whose content changed."""
    lines, stale, out, position = text.splitlines(), [], [], 0
    for block in find_blocks(text, document):
        body = ["", *render(block.spec, tables, block.where).splitlines(), ""]
        if [line.rstrip() for line in lines[block.begin + 1 : block.end]] != body:
            stale.append(block)
        out += lines[position : block.begin + 1] + body
        position = block.end
    out += lines[position:]
    return "\n".join(out) + ("\n" if text.endswith("\n") or not text else ""), stale


def documents(root: Path) -> list[Path]:
    """README.md and docs/*.md under ``root`` (those that exist)."""
    return [path for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if path.is_file()]


def run(root: Path = REPO, tables: Path = REPO, check: bool = False) -> tuple[list[str], list[str]]:
    """Rewrite (or with ``check`` only compare) every block; returns (problems, notes).

    A document with a malformed block or a missing source is reported and left as it is."""
    problems, notes, blocks = [], [], 0
    for path in documents(root):
        name = str(path.relative_to(root))
        text = path.read_text(encoding="utf-8")
        try:
            new, stale = fill(text, name, tables)
            blocks += len(find_blocks(text, name))
        except DocsTablesError as error:
            problems.append(str(error))
            continue
        if check:
            problems += [
                f"{b.where} is stale: it differs from {tables / b.spec.partition('#')[0]} "
                f"(run: python -m rebel.docs_tables)"
                for b in stale
            ]
        elif stale:
            path.write_text(new, encoding="utf-8")
            notes += [f"{b.where}: rewritten" for b in stale]
    notes.append(
        f"{blocks} generated block(s) in {len(documents(root))} document(s); "
        f"{'checked' if check else 'filled'} from {tables}"
    )
    return problems, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rebel.docs_tables", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if any block differs from its source"
    )
    parser.add_argument(
        "--tables",
        type=Path,
        default=REPO,
        help="root the blocks' file names are relative to (default: the repository root)",
    )
    parser.add_argument(
        "--root", type=Path, default=REPO, help="folder holding README.md and docs/ (default: the repository root)"
    )
    args = parser.parse_args(argv)
    problems, notes = run(args.root, args.tables, args.check)
    for note in notes:
        print(note)
    for problem in problems:
        print(f"docs-tables: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
