"""`python -m sidecar` is the `sidecar` command."""

from ._cli import run

run()
