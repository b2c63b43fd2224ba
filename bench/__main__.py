"""`python -m bench transfer --quick`: the same as `sidecar bench transfer --quick`."""

import sys

from bench._cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
