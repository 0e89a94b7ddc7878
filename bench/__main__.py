"""`make bench`: speed and memory figures of this machine, written to bench-out/results.json.

`python -m bench [formats] [ext4] [convert]` runs some parts; no argument runs all.
"""

import json
import sys

from . import convert, ext4, formats
from .inputs import OUT

PARTS = {"formats": formats.run, "ext4": ext4.run, "convert": convert.run}


def main() -> None:
    chosen = sys.argv[1:] or list(PARTS)
    unknown = [name for name in chosen if name not in PARTS]
    if unknown:
        raise SystemExit(f"unknown bench part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    results = {name: PARTS[name]() for name in chosen}
    OUT.mkdir(exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {OUT / 'results.json'}")


main()
