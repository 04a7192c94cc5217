"""`python -m taskqueue.worker`: the runner starts each worker process this way (see process.py)."""

import os
import sys

from taskqueue.worker.process import main

if __name__ == "__main__":
    sys.stdout.flush()
    os._exit(main(sys.argv[1:]))  # do not wait for a stuck task thread: its message was handed back
