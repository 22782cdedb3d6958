"""Read the tables of a generated BENCHMARKS.md back into cells, to check what they say."""

from __future__ import annotations


def tables(markdown: str) -> dict[str, list[dict[str, str]]]:
    """Each table under a `### heading`, as rows mapping column header to cell text."""
    found: dict[str, list[dict[str, str]]] = {}
    heading, header = None, None
    for line in markdown.splitlines():
        if line.startswith("### "):
            heading, header = line[4:], None
        elif line.startswith("|") and heading is not None:
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if header is None:
                header = cells
            elif not set(line) <= set("|-: "):
                found.setdefault(heading, []).append(dict(zip(header, cells)))
        else:
            header = None
    return found
