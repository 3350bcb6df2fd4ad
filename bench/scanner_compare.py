#!/usr/bin/env python3
"""Runs both scanners on the corpus and a tree subset; called by scanner.sh."""
import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import time


def run(command, cwd):
    """Runs a command and returns (stdout, wall seconds, child CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode not in (0, 1):
        raise SystemExit(f"{command[0]} failed ({result.returncode}): {result.stderr.decode()[-2000:]}")
    return result.stdout, wall, cpu


def castellan_lines(binary, directory):
    out, wall, cpu = run([binary, "scan", "--format", "json", "."], directory)
    found = {(os.path.normpath(f["path"]), f["line"]) for f in json.loads(out)}
    return found, wall, cpu


def detect_secrets_lines(binary, directory):
    out, wall, cpu = run([binary, "scan", "--all-files", "."], directory)
    results = json.loads(out)["results"]
    found = {(os.path.normpath(name), item["line_number"]) for name, items in results.items() for item in items}
    return found, wall, cpu


def copy_corpus(corpus, target):
    for part in ("positive", "negative"):
        shutil.copytree(os.path.join(corpus, part), os.path.join(target, part))
    with open(os.path.join(corpus, "labels.json")) as labels:
        return {(os.path.normpath(l["file"]), l["line"]) for l in json.load(labels)["findings"]}


def copy_tree_subset(tree, target, limit_bytes):
    """Copies text-sized files in sorted path order until `limit_bytes`; drops
    ignore files so both tools see the same files."""
    total = 0
    for directory, subdirs, files in sorted(os.walk(tree)):
        subdirs.sort()
        subdirs[:] = [d for d in subdirs if d != ".git"]
        for name in sorted(files):
            source = os.path.join(directory, name)
            if name in (".gitignore", ".ignore") or not os.path.isfile(source) or os.path.islink(source):
                continue
            size = os.path.getsize(source)
            if size > 10 * 1024 * 1024:
                continue
            destination = os.path.join(target, os.path.relpath(source, tree))
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            shutil.copyfile(source, destination)
            total += size
            if total >= limit_bytes:
                return total
    return total


def score(found, labels):
    hits = len(found & labels)
    precision = hits / len(found) if found else 1.0
    return precision, hits / len(labels)


def main():
    parser = argparse.ArgumentParser()
    for name in ("castellan", "throughput", "detect-secrets", "corpus", "tree", "work"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--tree-mb", type=int, default=100)
    args = parser.parse_args()

    corpus_dir = os.path.join(args.work, "corpus")
    labels = copy_corpus(args.corpus, corpus_dir)
    tree_dir = os.path.join(args.work, "tree")
    tree_bytes = copy_tree_subset(args.tree, tree_dir, args.tree_mb * 1024 * 1024)
    megabytes = tree_bytes / 1e6

    print(f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"- machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    print(f"- tree: first {megabytes:.1f} MB of {args.tree} in sorted path order\n")
    print("| tool | corpus precision | corpus recall | tree findings | tree wall s | tree CPU s | MB/s wall | MB/s per CPU-second |")
    print("|---|---|---|---|---|---|---|---|")
    rows = {}
    for tool, scan in (("castellan", castellan_lines), ("detect-secrets", detect_secrets_lines)):
        binary = args.castellan if tool == "castellan" else args.detect_secrets
        found, _, _ = scan(binary, corpus_dir)
        precision, recall = score(found, labels)
        tree_found, wall, cpu = scan(binary, tree_dir)
        rows[tool] = (wall, cpu)
        print(f"| {tool} | {precision:.3f} | {recall:.3f} | {len(tree_found)} | {wall:.2f} | {cpu:.2f} "
              f"| {megabytes / wall:.1f} | {megabytes / cpu:.1f} |")
    speedup_wall = rows["detect-secrets"][0] / rows["castellan"][0]
    speedup_cpu = rows["detect-secrets"][1] / rows["castellan"][1]
    print(f"\ncastellan is {speedup_wall:.0f}x faster in wall time and {speedup_cpu:.0f}x in CPU time.")
    out, _, _ = run([args.throughput, tree_dir], args.work)
    print(f"\nIn-memory engine, one thread (no disk reads): `{out.decode().strip()}`")


if __name__ == "__main__":
    main()
