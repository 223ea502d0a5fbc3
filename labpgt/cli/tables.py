"""Tables that never lose a character: wrapped to the terminal, or one record per block.

Rich folds a cell at word boundaries, but a column never gets narrower than its longest
word; a table whose words do not fit the terminal would be cropped (or its cells cut with
an ellipsis). `print_table` checks the table's minimum width first and, when it does not
fit, prints every row as a block of ``header: value`` lines instead.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text


def fits(console: Console, table: Table) -> bool:
    """True when ``table`` can be drawn within the console's width without cutting a word."""
    # Measurement.get clamps to the console width, so the columns are measured one by one.
    options = console.options
    needed = sum(
        table._measure_column(console, options, column).minimum for column in table.columns
    )
    return needed + table._extra_width <= console.width


def _share_width(console: Console, table: Table) -> None:
    """Fix each column's width so the table fits: the column with the most slack above its
    longest word gives up a character first (rich's own reduction may push narrow columns
    under their longest word, which then overflow the terminal)."""
    options = console.options
    ranges = [table._measure_column(console, options, column) for column in table.columns]
    widths = [r.maximum for r in ranges]
    minima = [r.minimum for r in ranges]
    available = console.width - table._extra_width
    if sum(widths) <= available:
        return
    while sum(widths) > available:
        slack = [w - m for w, m in zip(widths, minima, strict=True)]
        widest = max(range(len(widths)), key=lambda i: (slack[i], widths[i]))
        if slack[widest] <= 0:
            break
        widths[widest] -= 1
    for index, (column, width) in enumerate(zip(table.columns, widths, strict=True)):
        column.width = width - table._get_padding_width(index)


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` folded to the terminal, or as vertical records when it cannot fit."""
    for column in table.columns:
        column.overflow = "fold"
        column.no_wrap = False
    if fits(console, table):
        _share_width(console, table)
        console.print(table)
        return
    if table.title is not None:
        console.print(Text(str(table.title), style="bold"), soft_wrap=False)
    headers = [str(c.header) for c in table.columns]
    width = max((len(h) for h in headers), default=0)
    for row in range(table.row_count):
        for column, header in zip(table.columns, headers, strict=True):
            cell = column._cells[row]
            value = cell if isinstance(cell, Text) else Text(str(cell))
            line = Text(f"{header:<{width}}  ", style="bold")
            line.append_text(value)
            console.print(line, highlight=False, soft_wrap=False, overflow="fold")
        if row != table.row_count - 1:
            console.print()
