"""``ponder`` run as a user runs it: a process of its own, without the developer's model keys."""

import os
import subprocess
import sys

PONDER = [sys.executable, "-m", "ponder.cli"]


def ponder(*args, env=None, input=None, cwd=None):
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("PONDER_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL")}
    environment.update(env or {})
    return subprocess.run([*PONDER, *args], capture_output=True, text=True, env=environment,
                          input=input, cwd=cwd, timeout=120)
