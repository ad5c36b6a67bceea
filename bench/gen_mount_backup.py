#!/usr/bin/env python3
"""Writes a large backup directly on disk, in the repository format `backup` writes
(docs/format.md), shaped for the mount's benchmarks: a mirror of F tracked files (empty, so a
million of them fit in memory on a tmpfs), one folder `big/` of B of them, and N increments
of M changed files each (track/ files, metadata JSON). Running `backup` 1,000 times over a
million files would take far longer than the measurement itself.

The mirror's files carry no storing increment (like an original-tool backup after a prune):
the index keeps them as versions present since before every increment, so every snapshot
holds all F files without a million-entry first catalog.

usage: gen_mount_backup.py DIST [--files F] [--big B] [--increments N] [--per-increment M]
"""
import argparse
import os
import random
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dist")
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--big", type=int, default=50_000)
    ap.add_argument("--increments", type=int, default=1000)
    ap.add_argument("--per-increment", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    dist = a.dist
    os.makedirs(os.path.join(dist, "mirror"), exist_ok=False)
    paths = [f"big/file{i:06d}.txt" for i in range(min(a.big, a.files))]
    rest = a.files - len(paths)
    for i in range(rest):
        paths.append(f"src/mod{i % 500:03d}/sub{(i // 500) % 20:02d}/file{i:07d}.txt")
    base = 1_704_067_200  # 2024-01-01
    made = set()

    def touch(path, mtime):
        d = os.path.dirname(path)
        if d not in made:
            os.makedirs(d, exist_ok=True)
            made.add(d)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.close(fd)
        os.utime(path, ns=(mtime, mtime))

    mtimes = {}
    for n, p in enumerate(paths):
        mt = (base + n % 86400) * 1_000_000_000
        touch(os.path.join(dist, "mirror", p), mt)
        mtimes[p] = mt
    for k in range(a.increments):
        at = base + 86400 + k * 3600
        t = time.gmtime(at)
        name = time.strftime("backup_%Y%m%d_%H%M%S", t)
        inc = os.path.join(dist, name)
        mt = at * 1_000_000_000
        entries = []
        for p in sorted(rnd.sample(paths, min(a.per_increment, len(paths)))):
            touch(os.path.join(inc, "track", p), mt)
            # The mirror gets the new version (a new inode, as a run's rename gives).
            tmp = os.path.join(dist, "mirror", p + ".tmp")
            touch(tmp, mt)
            os.replace(tmp, os.path.join(dist, "mirror", p))
            mtimes[p] = mt
            entries.append(
                f'"{p}": {{"category": "tracked", "op": "changed", "size": 0, '
                f'"mtime": {mt / 1e9}, "mtime_ns": {mt}, "mode": 420}}'
            )
        with open(os.path.join(inc, name + ".json"), "w") as f:
            f.write(f'{{"version": 2, "timestamp": "{time.strftime("%Y-%m-%dT%H:%M:%S+00:00", t)}", '
                    f'"backup_name": "{name}",\n "file_catalog": {{\n  ')
            f.write(",\n  ".join(entries))
            f.write(f'}},\n "summary": {{"new": 0, "changed": {len(entries)}, "deleted": 0, '
                    '"bytes": 0}\n}\n')
        last = name
    with open(os.path.join(dist, "mirror.json"), "w") as f:
        f.write('{"schema_version": 2, "files": {\n')
        first = True
        for p in paths:
            mt = mtimes[p]
            f.write(("" if first else ",\n") +
                    f'"{p}": {{"size": 0, "mtime": {mt / 1e9}, "mtime_ns": {mt}, '
                    f'"mode": 420, "tracked": true}}')
            first = False
        f.write("\n}}\n")
    print(f"{a.files} files, {a.increments} increments, newest {last}")


if __name__ == "__main__":
    main()
