#!/usr/bin/env python3
"""Rewrites the values of the ```vectors blocks in docs/PROTOCOL.md from what the code computes.

Use after a deliberate format change, then review the diff and re-run `python3 scripts/check_vectors.py`:
    cargo test -p qvoice-proto print_vectors -- --ignored --nocapture 2>/dev/null | python3 scripts/update_vectors.py
"""
import re
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"


def read_printed(text):
    """name -> list of lines as print_vectors emits them."""
    out, name = {}, None
    for line in text.splitlines():
        m = re.match(r"^([a-z0-9_]+) =( .*)?$", line)
        if m:
            name = m.group(1)
            out[name] = [line]
        elif line.startswith("  ") and name:
            out[name].append(line)
        else:
            name = None
    return out


def main():
    printed = read_printed(sys.stdin.read())
    if not printed:
        sys.exit("no vectors on stdin")
    lines = DOC.read_text().splitlines()
    res, in_block, skipping, seen = [], False, False, set()
    for line in lines:
        if line.strip().startswith("```"):
            in_block = line.strip() == "```vectors"
            skipping = False
            res.append(line)
            continue
        if in_block:
            m = re.match(r"^([a-z0-9_]+) =", line)
            if m and m.group(1) in printed:
                res.extend(printed[m.group(1)])
                seen.add(m.group(1))
                skipping = True
                continue
            if skipping and line.startswith(" "):
                continue
            skipping = False
        res.append(line)
    missing = sorted(set(printed) - seen)
    if missing:
        sys.exit(f"computed but not in the document: {', '.join(missing)}")
    DOC.write_text("\n".join(res) + "\n")
    print(f"updated {len(seen)} vectors")


if __name__ == "__main__":
    main()
