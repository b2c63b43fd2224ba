"""Errors raised by the discovery package.

    DiscoveryError                           root of everything discovery raises
    ├── InvalidDiscoveryUri (ValueError)     a --discovery URI that names no usable registry
    ├── RecordError (ValueError)             a registry record that does not describe an endpoint
    ├── RegistryUnavailable (ConnectionError) the registry cannot be reached, or answers 5xx/429
    ├── RegistryRejected                     the registry refused a request (4xx): a bug or a policy
    ├── NoHealthyEndpoint (LookupError)      a balancer was given no endpoint to pick from
    └── AllEndpointsBusy                     every endpoint is at this caller's concurrency limit

Backends translate their clients' exceptions (aiohttp, py-consul, zeroconf, yaml) to these.
"""

from __future__ import annotations


class DiscoveryError(Exception):
    """Root of every error the discovery package raises."""


class InvalidDiscoveryUri(DiscoveryError, ValueError):
    """A `--discovery` URI that is malformed or names an unknown scheme."""


class RecordError(DiscoveryError, ValueError):
    """A registry record (Consul entry, TXT record, static file entry) that is not an endpoint."""


class RegistryUnavailable(DiscoveryError, ConnectionError):
    """The registry could not be reached or answered with a transient error; retry later."""


class RegistryRejected(DiscoveryError):
    """The registry refused the request (a 4xx answer): retrying the same request will not help."""
