#!/usr/bin/env python3
"""The lowest Rust each feature set of the library needs, from the dependency graph.

For each feature set it takes the packages the library builds with (`cargo tree`, normal
and build edges, the host target, the committed Cargo.lock: dev-dependencies and their
feature unification left out) and their `rust_version` from `cargo metadata
--format-version 1`; the highest one is what that feature set needs. It fails when a
feature set needs more than `[package.metadata.msrv]` in Cargo.toml claims, or when
`rust-version` is not the claim of the default build; it says so when a claim is higher
than the dependencies need (our own code may need it: clippy's `incompatible_msrv` checks
that against `rust-version`).

    python3 .ci/msrv.py            # check, and print the table
    python3 .ci/msrv.py --table    # only print the table (for the README)
"""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LIBRARY = "normal,build"
# (name in Cargo.toml's [package.metadata.msrv], cargo arguments, dependency kinds)
FEATURE_SETS = [
    ("no-default-features", ["--no-default-features"], LIBRARY),
    ("default", [], LIBRARY),
    ("metrics", ["--features", "metrics"], LIBRARY),
    ("redis", ["--features", "redis"], LIBRARY),
    ("reqwest", ["--features", "reqwest"], LIBRARY),
    ("test-util", ["--features", "test-util"], LIBRARY),
    ("tower-http", ["--features", "tower-http"], LIBRARY),
    ("all-features", ["--all-features"], LIBRARY),
    # Not the library's: what `cargo test --all-features` in this repository needs.
    ("tests", ["--all-features"], "normal,build,dev"),
]

LINE = re.compile(r"^(\S+) v(\S+)")


def cargo(*args: str) -> str:
    return subprocess.run(
        ["cargo", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def version_key(version: str) -> tuple[int, int, int]:
    """`1.85` and `1.85.0` compare equal."""
    parts = [int(part) for part in version.split(".")] + [0, 0]
    return (parts[0], parts[1], parts[2])


def packages(args: list[str], edges: str) -> set[tuple[str, str]]:
    """(name, version) of every package a build with `args` compiles."""
    tree = cargo("tree", "--locked", "-e", edges, "--prefix", "none", "--format", "{p}", *args)
    found = set()
    for line in tree.splitlines():
        match = LINE.match(line)
        if match:
            found.add((match[1], match[2]))
    return found


def main() -> int:
    table_only = "--table" in sys.argv
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    package = manifest["package"]
    claims = package.get("metadata", {}).get("msrv", {})
    metadata = json.loads(cargo("metadata", "--locked", "--format-version", "1"))
    rust_versions = {
        (p["name"], p["version"]): p.get("rust_version") for p in metadata["packages"]
    }

    failures = []
    rows = []
    for name, args, edges in FEATURE_SETS:
        needs = [
            (rust_versions.get(pkg) or "0", pkg)
            for pkg in packages(args, edges)
            if pkg[0] != package["name"]
        ]
        needed, (by_name, by_version) = max(
            needs, key=lambda n: (version_key(n[0]), n[1][0])
        )
        crates = len(needs)
        rows.append((name, needed, f"{by_name} {by_version}", crates))
        claim = claims.get(name)
        if claim is None:
            failures.append(f"{name}: no claim in [package.metadata.msrv] (it needs {needed})")
        elif version_key(needed) > version_key(claim):
            failures.append(
                f"{name}: {by_name} {by_version} needs Rust {needed}, the claim is {claim}"
            )
        elif version_key(needed) < version_key(claim) and not table_only:
            print(f"note: {name} claims {claim}, its dependencies need only {needed}")

    if claims.get("default") != package.get("rust-version"):
        failures.append(
            f"rust-version is {package.get('rust-version')}, the default build's claim is "
            f"{claims.get('default')}: make them equal"
        )

    print("| feature set | Rust | needed by | crates |")
    print("| --- | --- | --- | --- |")
    for name, needed, by, crates in rows:
        print(f"| `{name}` | {needed} | {by} | {crates} |")
    if failures and not table_only:
        print("\nMSRV check failed:", *failures, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
