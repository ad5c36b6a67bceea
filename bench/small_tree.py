#!/usr/bin/env python3
"""The trees of millions of small files the scale benchmarks share (corpus.py stops at ~100k).

  small_tree.py make ROOT N [--empty]   file i in {docs,media}/d<i/2000>/f<i>.txt, 40-540 bytes
                                        of text (--empty: no bytes, inodes only); docs/ even i
  small_tree.py spread ROOT N           1 % churn spread over every folder: every 100th file
                                        gets a line (the worst case for a path-keyed index)
  small_tree.py clustered ROOT N        1 % churn clustered: as many tracked files, all in the
                                        first folders of docs/ (the usual shape of a day)
"""
import os
import sys


def path(root, i):
    top = "docs" if i % 2 == 0 else "media"
    return f"{root}/{top}/d{i // 2000:04d}/f{i:07d}.txt"


def make(root, n, empty):
    for i in range(n):
        p = path(root, i)
        if i % 2000 < 2:
            os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            if not empty:
                f.write(f"file {i}\n" * (4 + i % 50))


def append(root, indices, line):
    for i in indices:
        with open(path(root, i), "a") as f:
            f.write(line)


def main(argv):
    if len(argv) < 3 or argv[0] not in ("make", "spread", "clustered"):
        sys.exit(__doc__)
    cmd, root, n = argv[0], argv[1], int(argv[2])
    if cmd == "make":
        make(root, n, "--empty" in argv[3:])
    elif cmd == "spread":
        append(root, range(0, n, 100), "changed\n")
    else:
        append(root, range(0, max(2, n // 50), 2), "changed again\n")


if __name__ == "__main__":
    main(sys.argv[1:])
