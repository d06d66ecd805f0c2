"""The generated-table blocks of README.md and docs/*.md (rebel/docs_tables.py): rewrite and check on
temporary files, and the committed documents against the tables rendered from the committed cache/."""

import subprocess
import sys

import pytest
from conftest import REPO

from rebel import docs_tables as D

TABLE = "| a | b |\n|---|---|\n| 1 | 2 |\n"
SOURCE = "Caption line.\n\n" + TABLE + "\nNotes:\n\n- one\n- two\n\n| c |\n|---|\n| 3 |\n\n```yaml\nx: 1\n\ny: 2\n```\n"


def block(spec, body):
    return f"<!-- BEGIN generated: {spec} -->\n\n{body.strip()}\n\n<!-- END generated -->\n"


@pytest.fixture
def tree(tmp_path):
    """A repository-shaped folder: tables/t.md, README.md and docs/page.md."""
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "t.md").write_text(SOURCE)
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# Title\n\nText.\n\n" + block("tables/t.md#table1", TABLE) + "\nAfter.\n")
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n" + block("tables/t.md", SOURCE))
    return tmp_path


def test_up_to_date_blocks_pass_and_rewriting_changes_nothing(tree):
    before = {p: p.read_text() for p in D.documents(tree)}
    assert D.run(tree, tree, check=True)[0] == []
    assert D.run(tree, tree)[0] == []
    assert {p: p.read_text() for p in D.documents(tree)} == before
    assert D.main(["--check", "--root", str(tree), "--tables", str(tree)]) == 0


def test_a_stale_block_fails_the_check_naming_file_and_block_and_is_rewritten(tree, capsys):
    (tree / "tables" / "t.md").write_text(SOURCE.replace("| 1 | 2 |", "| 1 | 9 |"))
    readme = (tree / "README.md").read_text()
    problems, _ = D.run(tree, tree, check=True)
    assert len(problems) == 2
    assert problems[0].startswith("README.md:5: block 'tables/t.md#table1' is stale")
    assert problems[1].startswith("docs/page.md:3: block 'tables/t.md' is stale")
    assert (tree / "README.md").read_text() == readme  # --check writes nothing
    assert D.main(["--check", "--root", str(tree), "--tables", str(tree)]) == 1
    assert "README.md:5: block 'tables/t.md#table1' is stale" in capsys.readouterr().err

    assert D.run(tree, tree)[0] == []
    assert (tree / "README.md").read_text() == readme.replace("| 1 | 2 |", "| 1 | 9 |")
    assert "| 1 | 9 |" in (tree / "docs" / "page.md").read_text()
    assert D.run(tree, tree, check=True)[0] == []


def test_a_hand_edited_block_is_stale(tree):
    page = tree / "docs" / "page.md"
    page.write_text(page.read_text().replace("- two", "- 2"))
    assert [p.split(" is stale")[0] for p in D.run(tree, tree, check=True)[0]] == [
        "docs/page.md:3: block 'tables/t.md'"
    ]


def test_a_missing_source_file_fails_clearly_and_leaves_the_document_alone(tree, capsys):
    readme = tree / "README.md"
    readme.write_text(readme.read_text() + "\n" + block("tables/gone.md", "old"))
    text = readme.read_text()
    for check in (True, False):
        problems, _ = D.run(tree, tree, check=check)
        assert len(problems) == 1 and problems[0].startswith("README.md:")
        assert "block 'tables/gone.md'" in problems[0] and "gone.md does not exist" in problems[0]
        assert "make figures-from-cache" in problems[0]
        assert readme.read_text() == text
    assert D.main(["--root", str(tree), "--tables", str(tree)]) == 1
    assert "tables/gone.md" in capsys.readouterr().err


def test_selectors_pick_the_nth_chunk_of_a_kind(tree):
    tables = tree
    assert D.render("tables/t.md#table1", tables) == TABLE.strip()
    assert D.render("tables/t.md#table2", tables) == "| c |\n|---|\n| 3 |"
    assert D.render("tables/t.md#list1", tables) == "- one\n- two"
    assert D.render("tables/t.md#paragraph2", tables) == "Notes:"
    assert D.render("tables/t.md#code1", tables) == "```yaml\nx: 1\n\ny: 2\n```"  # blank line inside the fence
    with pytest.raises(D.DocsTablesError, match="has 2 table"):
        D.render("tables/t.md#table3", tables)
    with pytest.raises(D.DocsTablesError, match="unknown selector"):
        D.render("tables/t.md#row1", tables)
    with pytest.raises(D.DocsTablesError, match="inside the tables root"):
        D.render("../t.md", tables)


@pytest.mark.parametrize(
    "text, message",
    [
        ("<!-- BEGIN generated: tables/t.md -->\n", "has no '<!-- END generated -->'"),
        (
            "<!-- BEGIN generated: tables/t.md -->\n<!-- BEGIN generated: tables/t.md -->\n<!-- END generated -->\n",
            "before the next BEGIN on line 2",
        ),
        ("x\n<!-- END generated -->\n", "doc.md:2: '<!-- END generated -->' without a BEGIN"),
        ("<!-- BEGIN generated tables/t.md -->\n", "malformed marker"),
    ],
)
def test_malformed_markers_are_errors(text, message):
    with pytest.raises(D.DocsTablesError, match=message):
        D.find_blocks(text, "doc.md")


def test_the_module_runs_without_torch(tree):
    code = (
        "import sys, rebel.docs_tables as d; sys.exit(d.main(['--check', '--root', sys.argv[1], '--tables', "
        "sys.argv[1]]) or ('torch' in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code, str(tree)], cwd=REPO).returncode == 0
    done = subprocess.run(
        [sys.executable, "-m", "rebel.docs_tables", "--check", "--root", str(tree), "--tables", str(tree / "nowhere")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "does not exist" in done.stderr


def test_the_committed_documents_have_well_formed_blocks_naming_rendered_tables():
    blocks = [
        b
        for path in D.documents(REPO)
        for b in D.find_blocks(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    ]
    names = {b.spec.partition("#")[0] for b in blocks}
    assert any(b.document == "README.md" and b.spec.startswith("tables/table1.md") for b in blocks)
    assert all(name.startswith("tables/") and name.endswith(".md") for name in names), names


@pytest.mark.slow
def test_the_committed_documents_equal_the_tables_rendered_from_the_committed_cache(rendered_cache):
    problems, _ = D.run(REPO, rendered_cache, check=True)
    assert problems == [], "\n".join(problems) + "\n(fill them: make figures-from-cache && python -m rebel.docs_tables)"
