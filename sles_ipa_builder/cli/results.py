"""Where a verb's result goes: stdout. Logs, progress and errors go to stderr (log.console).

On a terminal the result is rich tables; piped or redirected (`summary | less`, `repos ISO > f`) it
is plain text: a `# title` line per table, then aligned columns, so grep, awk and diff can read it.
"""

from __future__ import annotations

import sys

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text


def show(*items: RenderableType) -> None:
    """Print results to stdout. Strings are printed as they are (no rich markup in paths or names)."""
    out = sys.stdout  # looked up at call time: tests and callers may replace it
    if out.isatty():
        console = Console(file=out, highlight=False)
        for item in items:
            console.print(item, markup=False) if isinstance(item, str) else console.print(item)
    else:
        out.write("".join(plain(item) for item in items))
    out.flush()


def plain(item: RenderableType) -> str:
    """Plain text of a string, a table or a group of them."""
    if isinstance(item, Group):
        return "".join(plain(r) for r in item.renderables)
    if isinstance(item, Table):
        return _table(item)
    return f"{item}\n"


def _cell(value: RenderableType) -> str:
    if isinstance(value, Text):
        return value.plain
    return Text.from_markup(value).plain if isinstance(value, str) else str(value)


def _table(t: Table) -> str:
    columns = t.columns
    rows = [list(r) for r in zip(*([_cell(c) for c in col.cells] for col in columns), strict=True)]
    data = ([[_cell(c.header) for c in columns]] if t.show_header else []) + rows
    widths = [max((len(r[i]) for r in data), default=0) for i in range(len(columns))]
    lines = [f"# {_cell(t.title)}"] if t.title else []
    for row in data:
        cells = [v.rjust(w) if col.justify == "right" else v.ljust(w) for v, w, col in zip(row, widths, columns,
                                                                                          strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n\n"
