#!/usr/bin/env python3
"""Writes a large backup directly on disk, in the repository format `backup` writes
(docs/format.md): a mirror of F files with mirror.json, and N increments of M changed
files each (track/ hard links to distinct versions, metadata JSON). Running `backup`
1,000 times to get the same shape would take far longer than the measurement itself.

usage: gen_tool_backup.py DIST [--increments N] [--per-increment M] [--mirror-files F]
"""
import argparse
import json
import os
import random
import time

EXTS = [".rs", ".py", ".txt", ".md", ".json", ".c", ".h", ".toml"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dist")
    ap.add_argument("--increments", type=int, default=1000)
    ap.add_argument("--per-increment", type=int, default=100)
    ap.add_argument("--mirror-files", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    dist = a.dist
    os.makedirs(os.path.join(dist, "mirror"), exist_ok=False)
    paths = []
    for i in range(a.mirror_files):
        d = f"src/mod{i % 500:03d}/sub{(i // 500) % 20:02d}"
        paths.append(f"{d}/file{i:06d}{EXTS[i % len(EXTS)]}")
    base = 1_704_067_200  # 2024-01-01
    index = {}
    made_dirs = set()

    def write(path, data, mtime):
        d = os.path.dirname(path)
        if d not in made_dirs:
            os.makedirs(d, exist_ok=True)
            made_dirs.add(d)
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, ns=(mtime, mtime))

    for n, p in enumerate(paths):
        data = f"{p} v0\n".encode()
        mt = (base + n) * 1_000_000_000
        write(os.path.join(dist, "mirror", p), data, mt)
        index[p] = {"size": len(data), "mtime": mt / 1e9, "mtime_ns": mt,
                    "tracked": True, "mode": 0o644}
    version = {}
    for k in range(a.increments):
        t = time.gmtime(base + 86400 + k * 3600)
        name = time.strftime("backup_%Y%m%d_%H%M%S", t)
        inc = os.path.join(dist, name)
        catalog = {}
        for p in rnd.sample(paths, a.per_increment):
            version[p] = version.get(p, 0) + 1
            data = f"{p} v{version[p]}\n".encode()
            mt = (base + 86400 + k * 3600) * 1_000_000_000
            write(os.path.join(inc, "track", p), data, mt)
            catalog[p] = {"size": len(data), "mtime": mt / 1e9, "mtime_ns": mt,
                          "category": "tracked", "op": "changed", "mode": 0o644}
        meta = {"version": 2, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", t),
                "backup_name": name, "file_catalog": catalog,
                "summary": {"new": 0, "changed": len(catalog), "deleted": 0,
                            "bytes": sum(e["size"] for e in catalog.values())}}
        with open(os.path.join(inc, name + ".json"), "w") as f:
            json.dump(meta, f, indent=1)
    with open(os.path.join(dist, "mirror.json"), "w") as f:
        json.dump({"schema_version": 2, "files": index}, f)


if __name__ == "__main__":
    main()
