#!/usr/bin/env python3
"""Each install block of README.md builds its snippet, with exactly that block.

Under "## Install", every ```toml block is followed by a ```rust block. For each pair this
writes a small application crate under target/readme/ (the toml block as its
[dependencies], the rust block as src/main.rs, docplanner-auth patched to this checkout)
and runs `cargo check` on it. The crates start from this repository's Cargo.lock, so they
build the versions the library is tested with, and share one target directory.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "readme"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)


def main() -> int:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    blocks = [(lang, body) for lang, body in FENCE.findall(section) if lang in ("toml", "rust")]
    pairs = [
        (blocks[i][1], blocks[i + 1][1])
        for i in range(len(blocks) - 1)
        if blocks[i][0] == "toml" and blocks[i + 1][0] == "rust"
    ]
    if len(pairs) < 3:
        print(f"expected an install block and a snippet per stack, found {len(pairs)} pairs")
        return 1
    failed = 0
    for n, (dependencies, code) in enumerate(pairs, start=1):
        if not dependencies.startswith("[dependencies]\n"):
            print(f"snippet {n}: its toml block must be a [dependencies] block")
            return 1
        crate = WORK / f"snippet-{n}"
        shutil.rmtree(crate, ignore_errors=True)
        (crate / "src").mkdir(parents=True)
        (crate / "Cargo.toml").write_text(
            f'[package]\nname = "readme-snippet-{n}"\nversion = "0.0.0"\nedition = "2021"\n'
            f"publish = false\n\n[workspace]\n\n{dependencies}\n"
            f'[patch.crates-io]\ndocplanner-auth = {{ path = "{ROOT}" }}\n'
        )
        (crate / "src" / "main.rs").write_text(code)
        shutil.copy(ROOT / "Cargo.lock", crate / "Cargo.lock")
        first_line = code.splitlines()[0] if code else ""
        print(f"--- snippet {n} ({first_line})", flush=True)
        result = subprocess.run(
            ["cargo", "check", "--quiet"],
            cwd=crate,
            env={**os.environ, "CARGO_TARGET_DIR": str(WORK / "target")},
        )
        failed += result.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
