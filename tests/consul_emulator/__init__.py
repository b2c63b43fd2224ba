"""A Consul agent HTTP API emulator for tests: the subset documented in consul-api.md.

`ConsulEmulator` serves it on a real socket; `python -m tests.consul_emulator` runs it as a
process. `test_conformance.py` holds the checks it shares with a real agent.
"""

from ._emulator import ConsulEmulator

__all__ = ["ConsulEmulator"]
