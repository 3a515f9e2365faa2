"""A pipelines module whose import takes a minute (a start stuck on something slow);
it first touches the file named by FRAMEJOBS_TEST_MARKER, so a test knows it is there."""

import os
import time
from pathlib import Path

Path(os.environ["FRAMEJOBS_TEST_MARKER"]).touch()
time.sleep(60)
