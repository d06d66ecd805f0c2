"""A generated table as a standalone HTML page for Snakemake's report (``snakemake --report``), which shows HTML
inline but offers CSV and Markdown only as downloads: ``python -m eval.report_html TABLE.md|TABLE.csv OUT.html``."""

from __future__ import annotations

import html
import sys
from pathlib import Path

import markdown
import pandas as pd

STYLE = """body { font-family: sans-serif; font-size: 14px; margin: 1em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f2f2f2; } td:nth-child(-n+2) { text-align: left; }"""


def table_html(source: Path) -> str:
    """The page of a table: Markdown (tables and notes, as the pipeline writes them) or CSV."""
    if source.suffix == ".csv":
        body = pd.read_csv(source).to_html(index=False, na_rep="", float_format="{:.4g}".format)
    elif source.suffix == ".md":
        body = markdown.markdown(source.read_text(), extensions=["tables"])
    else:
        raise ValueError(f"'{source}': expected a .md or .csv table")
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(source.name)}</title>"
        f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m eval.report_html TABLE.md|TABLE.csv OUT.html")
    Path(sys.argv[2]).write_text(table_html(Path(sys.argv[1])))
