"""One markdown table of the FPS suite's results, optionally written into the README.

    python benchmarks/fps_table.py fps.json                        # print the table
    python benchmarks/fps_table.py fps.json --output fps_table.md  # write it
    python benchmarks/fps_table.py fps.json --readme README.md     # rewrite the README's table block

The input is the JSON that ``pytest benchmarks/test_fps.py --benchmark-json fps.json`` writes (each case's row is
its ``extra_info``), or the JSON-lines file of rows the suite appends to as it goes (``ACTRACK_FPS_ROWS``), which
survives a run cut short. Only measured rows appear; ratios compare rows of the same input. The table format is
``actrack_fast.benchmarking.markdown_table``'s, the one ``actrack-fast bench`` prints.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from actrack_fast.benchmarking import markdown_table

START = "<!-- fps-table:start -->"
END = "<!-- fps-table:end -->"


def load_rows(path: Path) -> list[dict]:
    """Rows from a pytest-benchmark JSON file (``extra_info`` of each benchmark) or a JSON-lines file of rows."""
    text = path.read_text()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not JSON: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(f"{path} is not a pytest-benchmark JSON file (no 'benchmarks' list)")
    return [bench["extra_info"] for bench in data["benchmarks"] if "component" in bench.get("extra_info", {})]


def replace_block(text: str, table: str) -> str:
    """``text`` with everything between the START and END markers replaced by ``table``."""
    begin, end = text.find(START), text.find(END)
    if begin < 0 or end < 0 or end < begin:
        raise ValueError(f"the README needs the markers {START} and {END}, in that order")
    return text[: begin + len(START)] + "\n" + table + text[end:]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="pytest-benchmark JSON of benchmarks/test_fps.py, or rows .jsonl")
    parser.add_argument("--output", type=Path, help="write the table to this file")
    parser.add_argument("--readme", type=Path, help=f"rewrite the block between {START} and {END} in this file")
    args = parser.parse_args(argv)
    try:
        rows = load_rows(args.results)
        if not rows:
            raise ValueError(f"{args.results} holds no FPS rows (every case skipped or failed?)")
        table = markdown_table(rows)
        if args.readme:
            args.readme.write_text(replace_block(args.readme.read_text(), table))
    except (OSError, ValueError) as error:
        print(f"fps_table: error: {error}", file=sys.stderr)
        return 1
    if args.output:
        args.output.write_text(table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
