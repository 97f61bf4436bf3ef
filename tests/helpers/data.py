"""Where the shared data sets are."""

import os
from pathlib import Path

# The shared data sets, beside the repository (override with PONDER_DATA_DIR).
DATA = Path(os.environ.get("PONDER_DATA_DIR")
            or Path(__file__).resolve().parents[3] / "shared" / "data")
