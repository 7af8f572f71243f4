"""Where the warps of each profiled kernel wait, instruction by instruction, from an Nsight Compute report.

    ncu -i report.ncu-rep --page source --csv --print-source sass > source.csv
    python benchmarks/ncu_stall_summary.py source.csv [--top 25] [--listing sass.txt]

The report needs the SourceCounters section (warp-stall sampling). Per kernel instance: its stall samples, the
instructions with the most samples and their nonzero stall reasons, and the instructions with the most excess
L2 sectors or shared-memory wavefronts (uncoalesced or misaligned accesses). ``--listing`` writes every
instruction with its samples and excess sectors, in code order, for reading around a hot spot.
"""
from __future__ import annotations

import argparse
import csv
import io

SAMPLES = "Warp Stall Sampling (All Samples)"
EXCESS_SECTORS = "L2 Theoretical Sectors Global Excessive"


def kernel_tables(text: str) -> list[list[list[str]]]:
    """One CSV table per profiled kernel instance (ncu prints a header row before each)."""
    tables, lines = [], []
    for line in text.splitlines():
        if line.startswith('"Address"') and lines:
            tables.append(lines)
            lines = []
        if line.startswith('"Address"') or lines:
            lines.append(line)
    if lines:
        tables.append(lines)
    return [list(csv.reader(io.StringIO("\n".join(table)))) for table in tables]


def number(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def summarise(rows: list[list[str]], top: int) -> list[str]:
    head, body = rows[0], [r for r in rows[1:] if len(r) == len(rows[0])]
    source = head.index("Source")
    samples = head.index(SAMPLES)
    reasons = [i for i, name in enumerate(head) if name.startswith("stall_") and "Not Issued" not in name]
    total = sum(number(r[samples]) for r in body)
    out = [f"{len(body)} instructions, {total:.0f} stall samples"]
    for column, name in enumerate(head):
        if "Excessive" in name and sum(number(r[column]) for r in body):
            out.append(f"  most {name}:")
            worst = sorted(body, key=lambda r: -number(r[column]))[:8]
            out += [f"    {number(r[column]):9.0f}  {r[source]}" for r in worst]
    out.append("  most stall samples:")
    for r in sorted(body, key=lambda r: -number(r[samples]))[:top]:
        why = ", ".join(f"{head[i][6:]} {r[i]}" for i in reasons if number(r[i]))
        share = 100 * number(r[samples]) / max(total, 1)
        out.append(f"    {number(r[samples]):6.0f} {share:5.1f}%  {r[source][:60]:60s} {why}")
    return out


def listing(rows: list[list[str]]) -> list[str]:
    head = rows[0]
    source, samples = head.index("Source"), head.index(SAMPLES)
    excess = head.index(EXCESS_SECTORS) if EXCESS_SECTORS in head else None
    return [f"{r[0][-5:]} {r[samples]:>6} {r[excess] if excess is not None else '':>7}  {r[source]}"
            for r in rows[1:] if len(r) == len(head)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--listing")
    args = parser.parse_args()
    with open(args.csv) as handle:
        tables = kernel_tables(handle.read())
    for index, rows in enumerate(tables):
        print(f"=== kernel instance {index}: " + "\n".join(summarise(rows, args.top)))
    if args.listing:
        with open(args.listing, "w") as handle:
            for index, rows in enumerate(tables):
                handle.write(f"=== kernel instance {index}\n" + "\n".join(listing(rows)) + "\n")


if __name__ == "__main__":
    main()
