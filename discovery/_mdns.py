"""The mDNS registry backend, on python-zeroconf's asyncio API.

How it is put together:
- One `AsyncZeroconf` per registry, bound only to the IPv4 addresses of the interfaces it
  is given (default: `lo`), never to every interface. Its listening socket is bound to
  0.0.0.0:5353, where Linux delivers multicast from any interface some process joined the
  group on (IP_MULTICAST_ALL); a socket filter (classic BPF on the arrival interface) drops
  all but our interfaces' packets. IP_MULTICAST_ALL=0 would not do: with SO_REUSEPORT (every
  mDNS stack sets it) the kernel may then hand a packet to another socket of the port.
- One DNS-SD type, `_arrowmesh._tcp.local.`; the service is the TXT key `service=` (see
  `_txt`). One browser feeds every watch, each watch keeps its own service's instances.
- Every discovered instance has a follower task: it resolves the instance's records,
  decodes them (sans-IO, `_txt`), and while its service is watched probes the endpoint with
  a TCP connect. mDNS says nothing when a process dies, so an endpoint is listed only once a
  probe succeeded and is dropped after `probe_failures` failures in a row; a dropped
  endpoint is probed with back-off and comes back when a probe succeeds or it is
  announced anew. It is forgotten when its goodbye arrives or its records expire.
- A supervisor task resolves the interfaces every `interface_check_interval` and rebuilds
  the zeroconf instance when their addresses change; while none is usable, watches yield
  `Outage` and `register` raises RegistryUnavailable.

Instances are announced without RFC 6762 §8.1 probing (`cooperating_responders`): probing
delays an announcement by 1.2 s, and instance names are endpoint ids, unique by contract.
Queries are QM (multicast answers): on one host several responders share 127.0.0.1:5353,
and a unicast answer reaches only one of them.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import ctypes
import fcntl
import functools
import ipaddress
import logging
import random
import socket
import struct
import sys
from collections.abc import AsyncGenerator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from zeroconf import (
    BadTypeInNameException,
    DNSQuestionType,
    Error,
    IPVersion,
    NonUniqueNameException,
    ServiceNameAlreadyRegistered,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from ._endpoint import Endpoint
from ._errors import InvalidDiscoveryUri, RecordError, RegistryRejected, RegistryUnavailable
from ._registry import Outage, Snapshot, WatchEvent, sorted_endpoints
from ._txt import (
    SERVICE_TYPE,
    encode_txt,
    endpoint_from_txt,
    host_name,
    instance_name,
    service_of_txt,
)

logger = logging.getLogger(__name__)

# Host records' TTL (RFC 6762 §10): a crashed endpoint's records leave caches after this.
RECORD_TTL: Final = 120
MAX_PROBE_BACKOFF: Final = 5.0  # seconds between probes of an endpoint that keeps failing
CLOSE_TIMEOUT: Final = 3.0  # bound on goodbyes and socket teardown in aclose()

# Linux ioctls, flags and socket options (linux/sockios.h, linux/if.h, linux/filter.h).
_SIOCGIFCONF: Final = 0x8912
_SIOCGIFFLAGS: Final = 0x8913
_IFREQ_SIZE: Final = 40
_IFF_UP: Final = 0x1
_IFNAMSIZ: Final = 16
_SO_ATTACH_FILTER: Final = 26
_SKF_AD_IFINDEX: Final = 0xFFFFF000 + 8  # SKF_AD_OFF + SKF_AD_IFINDEX, as u32
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_RET_K = 0x20, 0x15, 0x06


@dataclass(frozen=True, slots=True)
class Binding:
    """mDNS on one interface: the address its sockets bind, the index packets arrive on."""

    address: str
    index: int


def host_addresses() -> list[tuple[str, str]]:
    """(device, IPv4 address) of every address on this host, primary first (Linux)."""
    size = _IFREQ_SIZE * 1024
    buffer = array.array("B", bytes(size))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("iL", size, buffer.buffer_info()[0])
        used = struct.unpack("iL", fcntl.ioctl(sock, _SIOCGIFCONF, request))[0]
    raw = buffer.tobytes()[:used]
    entries = []
    for offset in range(0, used, _IFREQ_SIZE):
        label = raw[offset : offset + _IFNAMSIZ].split(b"\0", 1)[0].decode()
        address = socket.inet_ntoa(raw[offset + 20 : offset + 24])
        entries.append((label.split(":")[0], address))  # "eth0:1" labels an address of eth0
    return entries


def resolve_interface(interface: str, addresses: Sequence[tuple[str, str]]) -> Binding:
    """Where mDNS runs for `interface` (a name or one of its IPv4 addresses), given the
    host's `addresses`; RegistryUnavailable if it is absent, down or has no IPv4 address."""
    try:
        ipaddress.IPv4Address(interface)
    except ValueError:
        device = interface
        address = next((a for d, a in addresses if d == interface), None)
    else:
        address = interface
        device = next((d for d, a in addresses if a == interface), "")
        if not device:
            raise RegistryUnavailable(f"address {interface} is on no interface of this host")
    try:
        index = socket.if_nametoindex(device)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            reply = fcntl.ioctl(sock, _SIOCGIFFLAGS, struct.pack("16s16x", device.encode()))
    except OSError:
        raise RegistryUnavailable(f"interface {interface!r} does not exist") from None
    if not struct.unpack_from("H", reply, _IFNAMSIZ)[0] & _IFF_UP:
        raise RegistryUnavailable(f"interface {interface!r} is down")
    if address is None:
        raise RegistryUnavailable(f"interface {interface!r} has no IPv4 address")
    return Binding(address, index)


def accept_only(sock: socket.socket, indices: Sequence[int]) -> None:
    """Attach a socket filter that drops packets arriving on other interfaces (Linux)."""
    count = len(indices)
    program = [(_BPF_LD_W_ABS, 0, 0, _SKF_AD_IFINDEX)]
    program += [(_BPF_JEQ_K, count - n, 0, index) for n, index in enumerate(indices)]
    program += [(_BPF_RET_K, 0, 0, 0), (_BPF_RET_K, 0, 0, 0xFFFFFFFF)]  # drop; accept all
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in program))
    sock.setsockopt(
        socket.SOL_SOCKET,
        _SO_ATTACH_FILTER,
        struct.pack("HL", len(program), ctypes.addressof(code)),
    )


def interface_address(interface: str) -> str:
    """The IPv4 address of an interface (a name or an address); raises InvalidDiscoveryUri."""
    return resolve_interface(interface, host_addresses()).address


def check_interface(value: str) -> None:
    """Accept an interface name or an IPv4 address; InvalidDiscoveryUri otherwise."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        if 0 < len(value.encode()) < _IFNAMSIZ and not any(c in value for c in "/ \t\n\0"):
            return
        raise InvalidDiscoveryUri(
            f"mdns interface {value!r} is neither an interface name (1-15 characters, no '/'"
            " or spaces) nor an IPv4 address"
        ) from None
    if ip.version != 4 or ip.is_unspecified or ip.is_multicast:
        raise InvalidDiscoveryUri(
            f"mdns interface {value!r}: give an interface name or one of its IPv4 addresses"
        )


@dataclass(slots=True)
class ProbeState:
    """Whether probes confirm an endpoint (sans-IO): listed after one success, dropped
    after `failures_to_drop` failures in a row; failing endpoints are probed with back-off."""

    failures_to_drop: int
    interval: float
    alive: bool = False
    failures: int = 0

    def observe(self, ok: bool) -> bool:
        """Record a probe result; True when `alive` changed."""
        if ok:
            self.failures = 0
            changed, self.alive = not self.alive, True
            return changed
        self.failures += 1
        if self.alive and self.failures >= self.failures_to_drop:
            self.alive = False
            return True
        return False

    def next_delay(self) -> float:
        """Seconds until the next probe."""
        over = self.failures - self.failures_to_drop
        if self.alive or over < 0:
            return self.interval
        backoff: float = self.interval * 2 ** min(over + 1, 16)
        return min(backoff, max(MAX_PROBE_BACKOFF, self.interval))


@dataclass(slots=True, eq=False)
class _Instance:
    """One discovered DNS-SD instance, as its follower task sees it."""

    name: str
    probe: ProbeState
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    endpoint: Endpoint | None = None
    rejected: str = ""  # why its records were rejected, if they were
    service: str | None = None  # the service it names, even if rejected


@dataclass(slots=True, eq=False)
class _Registration:
    endpoint: Endpoint
    healthy: bool = True
    info: AsyncServiceInfo | None = None  # set while advertised
    # The latest announcements or goodbyes; cancelled when the next change starts, so a late
    # copy of an old goodbye cannot withdraw a newer advertisement.
    broadcast: asyncio.Future[Any] | None = None

    def cancel_broadcast(self) -> None:
        if self.broadcast is not None:
            self.broadcast.cancel()
            self.broadcast = None


@dataclass(slots=True, eq=False)
class _Watcher:
    service: str
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class MdnsRegistry:
    """Registry over multicast DNS on explicit interfaces. Use as an async context manager.

    `interfaces`: names ("lo", "eth0"; resolved on Linux) or IPv4 addresses; mDNS is sent
    and heard on these only, and they need not exist yet (watches see an `Outage` until
    they do). `register` advertises at once: mDNS has no health of its own, so an endpoint
    is healthy until `set_health(id, False)` withdraws it (with a goodbye); a sidecar whose
    app is not ready yet calls that first. Watches list endpoints a TCP probe confirmed
    (module docstring); `Snapshot.rejected` counts malformed records naming the watched
    service (records naming none are only logged). `rng` draws advertisement epochs.

    Raises InvalidDiscoveryUri for an interface that is neither a name nor an IPv4 address,
    ValueError for a probe knob out of range.
    """

    def __init__(
        self,
        interfaces: Sequence[str] = ("lo",),
        *,
        probe_interval: float = 0.5,
        probe_timeout: float = 0.5,
        probe_failures: int = 2,
        interface_check_interval: float = 1.0,
        resolve_timeout: float = 3.0,
        service_type: str = SERVICE_TYPE,
        rng: random.Random | None = None,
    ) -> None:
        if isinstance(interfaces, str) or not interfaces:
            raise InvalidDiscoveryUri(f"mdns needs a list of interfaces, got {interfaces!r}")
        for interface in interfaces:
            check_interface(interface)
        for knob, value in (
            ("probe_interval", probe_interval),
            ("probe_timeout", probe_timeout),
            ("interface_check_interval", interface_check_interval),
            ("resolve_timeout", resolve_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{knob}={value} must be a positive number of seconds")
        if probe_failures < 1:
            raise ValueError(f"probe_failures={probe_failures} must be at least 1")
        self.interfaces = tuple(interfaces)
        self._type = service_type
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._probe_failures = probe_failures
        self._check_interval = interface_check_interval
        self._resolve_timeout = resolve_timeout
        self._rng = rng or random.Random()
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._bound: tuple[Binding, ...] = ()
        self._outage: str | None = None
        self._problems: dict[str, str] = {}
        self._lock = asyncio.Lock()  # held while the zeroconf instance or an advert changes
        self._ready = asyncio.Event()  # the first attempt to start zeroconf is over
        self._closed = False
        self._supervisor: asyncio.Task[None] | None = None
        self._followers: dict[_Instance, asyncio.Task[None]] = {}
        self._broadcasts: set[asyncio.Future[Any]] = set()  # zeroconf's announcements, goodbyes
        self._registrations: dict[str, _Registration] = {}
        self._instances: dict[str, _Instance] = {}
        self._watchers: set[_Watcher] = set()
        self._watched: collections.Counter[str] = collections.Counter()

    async def __aenter__(self) -> MdnsRegistry:
        await self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the Registry protocol ------------------------------------------------------------

    async def register(self, endpoint: Endpoint) -> None:
        """Advertise `endpoint` now (healthy).

        Raises RegistryRejected (no TXT record can hold it, or its address is not IPv4) or
        RegistryUnavailable (no interface is usable).
        """
        try:
            encode_txt(endpoint)
        except RecordError as exc:
            raise RegistryRejected(str(exc)) from exc
        _check_advertised_address(endpoint)
        await self._start()
        async with self._lock:
            zc = self._live_zeroconf()
            old = self._registrations.get(endpoint.id)
            if old is not None and old.endpoint == endpoint:
                return
            if old is not None:
                await self._withdraw(zc, old)
            registration = _Registration(endpoint)
            self._registrations[endpoint.id] = registration
            try:
                await self._advertise(zc, registration)
            except BaseException:
                del self._registrations[endpoint.id]
                raise
        logger.info("mdns endpoint registered", extra={"endpoint": endpoint.id})

    async def deregister(self, endpoint_id: str) -> None:
        """Withdraw the endpoint with a goodbye; unknown ids are not an error."""
        async with self._lock:
            registration = self._registrations.pop(endpoint_id, None)
            if registration is not None and self._zc is not None:
                await self._withdraw(self._zc, registration)
        if registration is not None:
            logger.info("mdns endpoint deregistered", extra={"endpoint": endpoint_id})

    async def set_health(self, endpoint_id: str, healthy: bool, note: str = "") -> None:
        """Re-advertise (`True`) or withdraw with a goodbye (`False`); KeyError if unknown.

        Raises RegistryUnavailable if it cannot be re-advertised now (it will be as soon as
        an interface is usable again).
        """
        registration = self._registrations.get(endpoint_id)
        if registration is None:
            raise KeyError(f"endpoint {endpoint_id!r} was not registered here")
        if registration.healthy == healthy:
            return
        registration.healthy = healthy
        logger.info(
            "mdns endpoint health",
            extra={"endpoint": endpoint_id, "healthy": healthy, "note": note},
        )
        async with self._lock:
            if not healthy and self._zc is not None:
                await self._withdraw(self._zc, registration)
            elif healthy and registration.info is None:
                await self._advertise(self._live_zeroconf(), registration)

    async def watch(self, service: str) -> AsyncGenerator[WatchEvent, None]:
        """Probe-confirmed endpoints of `service`: a snapshot now, then one per change.

        Ends when the registry is closed; raises RegistryUnavailable if it already is.
        """
        await self._start()
        watcher = _Watcher(service)
        self._watchers.add(watcher)
        self._watched[service] += 1
        self._wake(service)
        try:
            last: WatchEvent | None = None
            while not self._closed:
                watcher.changed.clear()
                event = self._event_for(service)
                if event != last and not (isinstance(event, Outage) and isinstance(last, Outage)):
                    last = event
                    yield event
                    continue
                await watcher.changed.wait()
        finally:
            self._watchers.discard(watcher)
            self._watched[service] -= 1
            if not self._watched[service]:
                del self._watched[service]

    async def aclose(self) -> None:
        """Send goodbyes for every endpoint registered here, stop every task, close sockets."""
        if self._closed:
            return
        self._closed = True
        self._notify()
        try:
            if self._supervisor is not None:
                self._supervisor.cancel()
                await _wait_cancelled([self._supervisor])
            async with self._lock:
                if self._zc is not None:
                    for registration in self._registrations.values():
                        await self._withdraw(self._zc, registration)
                self._registrations.clear()
                if self._broadcasts:
                    await asyncio.wait(self._broadcasts, timeout=CLOSE_TIMEOUT)
        finally:
            pending = [*self._followers.values(), *self._broadcasts]
            for task in pending:
                task.cancel()
            await _wait_cancelled(pending)
            await self._teardown()
            self._instances.clear()

    # -- the zeroconf instance ------------------------------------------------------------

    async def _start(self) -> None:
        if self._closed:
            raise RegistryUnavailable("the mdns registry is closed")
        if self._supervisor is None:
            self._supervisor = asyncio.get_running_loop().create_task(
                self._supervise(), name="mdns-supervisor"
            )
        await self._ready.wait()

    async def _supervise(self) -> None:
        """Keep a zeroconf instance bound to the interfaces' current addresses, forever."""
        while True:
            try:
                async with self._lock:
                    await self._reconcile()
            except Exception:  # a bug: say so, and keep mdns running
                logger.exception("mdns supervisor failed")
            finally:
                self._ready.set()
            await asyncio.sleep(self._check_interval)

    async def _reconcile(self) -> None:
        bindings = self._resolve_interfaces()
        if self._zc is not None and bindings == self._bound:
            return
        if self._zc is not None:
            logger.info("mdns interfaces changed", extra={"bindings": bindings})
            await self._teardown()
        if not bindings:
            self._set_outage(f"no usable mdns interface: {'; '.join(self._problems.values())}")
            return
        try:
            zc = await self._build(bindings)
        except RegistryUnavailable as exc:
            self._set_outage(str(exc))
            return
        self._set_outage(None)
        for registration in self._registrations.values():
            if registration.healthy:
                try:
                    await self._advertise(zc, registration)
                except (RegistryUnavailable, RegistryRejected) as exc:
                    logger.warning(
                        "mdns re-advertisement failed",
                        extra={"endpoint": registration.endpoint.id, "error": str(exc)},
                    )

    def _resolve_interfaces(self) -> tuple[Binding, ...]:
        """Each usable interface's binding; logs interfaces that change state."""
        try:
            addresses = host_addresses()
        except OSError as exc:
            addresses = []
            logger.warning("mdns cannot list addresses", extra={"error": repr(exc)})
        bindings: list[Binding] = []
        problems: dict[str, str] = {}
        for interface in self.interfaces:
            try:
                bindings.append(resolve_interface(interface, addresses))
            except RegistryUnavailable as exc:
                problems[interface] = str(exc)
        for interface, reason in problems.items():
            if self._problems.get(interface) != reason:
                logger.warning(
                    "mdns interface unusable", extra={"interface": interface, "reason": reason}
                )
        for interface in self._problems.keys() - problems.keys():
            logger.info("mdns interface usable", extra={"interface": interface})
        self._problems = problems
        return tuple(dict.fromkeys(bindings))

    async def _build(self, bindings: tuple[Binding, ...]) -> AsyncZeroconf:
        addresses = list(dict.fromkeys(b.address for b in bindings))
        try:
            zc = AsyncZeroconf(interfaces=addresses, ip_version=IPVersion.V4Only)
        except (OSError, Error, RuntimeError) as exc:
            raise RegistryUnavailable(f"mdns cannot bind to {addresses}: {exc}") from exc
        try:
            await zc.zeroconf.async_wait_for_start()
            bound = {sender.sock_name[0] for sender in zc.zeroconf.engine.senders}
            if missing := [a for a in addresses if a not in bound]:
                raise RegistryUnavailable(
                    f"mdns could not bind {missing} port 5353: the address is gone, or another"
                    " stack holds the port without SO_REUSEPORT (avahi: disallow-other-stacks)"
                )
            if sys.platform.startswith("linux"):
                for reader in zc.zeroconf.engine.readers:
                    accept_only(reader.sock, sorted({b.index for b in bindings}))
            browser = AsyncServiceBrowser(
                zc.zeroconf,
                [self._type],
                handlers=[self._on_change],
                question_type=DNSQuestionType.QM,
            )
        except BaseException as exc:
            await _close_zeroconf(zc)
            if isinstance(exc, (OSError, Error)):
                raise RegistryUnavailable(f"mdns failed to start: {exc}") from exc
            raise
        self._zc, self._browser, self._bound = zc, browser, bindings
        return zc

    async def _teardown(self) -> None:
        """Close the zeroconf instance (bounded), without goodbyes.

        Goodbyes are for withdrawn endpoints (sent before); when interfaces change, the
        endpoints are re-announced on the new instance, and the old may be unreachable.
        """
        zc, browser = self._zc, self._browser
        self._zc, self._browser, self._bound = None, None, ()
        for registration in self._registrations.values():
            registration.info = None
            registration.cancel_broadcast()
        if zc is None:
            return
        if browser is not None:
            await browser.async_cancel()
        zc.zeroconf.registry.async_remove(zc.zeroconf.registry.async_get_service_infos())
        await _close_zeroconf(zc)

    def _live_zeroconf(self) -> AsyncZeroconf:
        if self._zc is None:
            raise RegistryUnavailable(self._outage or "mdns is not running")
        return self._zc

    def _set_outage(self, reason: str | None) -> None:
        if reason == self._outage:
            return
        if reason is None:
            logger.info("mdns available", extra={"bindings": self._bound})
        else:
            logger.warning("mdns unavailable", extra={"reason": reason})
        self._outage = reason
        self._notify()

    # -- advertising ----------------------------------------------------------------------

    async def _advertise(self, zc: AsyncZeroconf, registration: _Registration) -> None:
        endpoint = registration.endpoint
        registration.cancel_broadcast()
        epoch = f"{self._rng.getrandbits(32):08x}"
        try:
            info = AsyncServiceInfo(
                self._type,
                instance_name(endpoint.id, self._type),
                port=endpoint.port,
                properties=encode_txt(endpoint, epoch),
                server=host_name(endpoint.id),
                parsed_addresses=[endpoint.address],
                host_ttl=RECORD_TTL,
                other_ttl=RECORD_TTL,
            )
            broadcast = await zc.async_register_service(info, cooperating_responders=True)
        except (BadTypeInNameException, NonUniqueNameException, ServiceNameAlreadyRegistered) as e:
            raise RegistryRejected(f"mdns refused endpoint {endpoint.id!r}: {e!r}") from e
        except (Error, OSError) as exc:
            raise RegistryUnavailable(f"mdns could not advertise {endpoint.id!r}: {exc!r}") from exc
        registration.broadcast = self._own_broadcast(broadcast)
        registration.info = info

    async def _withdraw(self, zc: AsyncZeroconf, registration: _Registration) -> None:
        """Remove the advert now; its goodbyes go out in a task this registry owns."""
        info, registration.info = registration.info, None
        if info is None:
            return
        registration.cancel_broadcast()
        try:
            goodbyes = await zc.async_unregister_service(info)
        except (Error, OSError) as exc:
            logger.warning(
                "mdns goodbye failed",
                extra={"endpoint": registration.endpoint.id, "error": repr(exc)},
            )
            return
        registration.broadcast = self._own_broadcast(goodbyes)

    # -- discovery ------------------------------------------------------------------------

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        """The browser's callback, in the event loop: start, wake or forget a follower."""
        if self._closed:
            return
        instance = self._instances.get(name.lower())
        if state_change is ServiceStateChange.Removed:
            if instance is not None:
                self._forget(instance)
        elif instance is None:
            instance = _Instance(name, ProbeState(self._probe_failures, self._probe_interval))
            self._instances[name.lower()] = instance
            self._spawn_follower(instance)
        else:
            instance.dirty.set()

    async def _follow(self, instance: _Instance) -> None:
        """Resolve, decode and probe one instance until it is forgotten."""
        while True:
            instance.dirty.clear()
            if not await self._resolve(instance):
                await self._wait_dirty(instance, MAX_PROBE_BACKOFF)
                continue
            while not instance.dirty.is_set():
                endpoint = instance.endpoint
                if endpoint is None or not self._watched[endpoint.service]:
                    await instance.dirty.wait()
                    break
                ok = await self._probe(endpoint)
                if instance.probe.observe(ok):
                    self._log_probe(endpoint, instance.probe.alive)
                    self._notify()
                if not ok and not instance.probe.alive and not self._in_cache(instance):
                    self._forget(instance)
                    return
                await self._wait_dirty(instance, instance.probe.next_delay())

    async def _resolve(self, instance: _Instance) -> bool:
        """Read the instance's records (from the cache, or asking); False if incomplete."""
        zc = self._zc
        if zc is None:
            return False
        info = AsyncServiceInfo(self._type, instance.name)
        try:
            found = await info.async_request(
                zc.zeroconf, self._resolve_timeout * 1000, question_type=DNSQuestionType.QM
            )
        except Error:  # the instance closed under us: the interfaces changed
            return False
        addresses = info.parsed_addresses(IPVersion.V4Only) if found else []
        if not addresses or not info.port:
            logger.debug("mdns instance unresolved", extra={"instance": instance.name})
            return False
        text = info.text or b""
        try:
            endpoint = endpoint_from_txt(instance.name, addresses[0], info.port, text, self._type)
        except RecordError as exc:
            self._reject(instance, str(exc), service_of_txt(text))
            return True
        if instance.rejected:
            logger.info("mdns record accepted", extra={"instance": instance.name})
        if endpoint != instance.endpoint:
            listed_before = instance.probe.alive or instance.rejected
            if instance.endpoint is None or instance.endpoint.authority != endpoint.authority:
                instance.probe = ProbeState(self._probe_failures, self._probe_interval)
            instance.endpoint, instance.rejected, instance.service = endpoint, "", endpoint.service
            if listed_before or instance.probe.alive:
                self._notify()
        return True

    def _reject(self, instance: _Instance, reason: str, service: str | None) -> None:
        if reason != instance.rejected:
            logger.warning(
                "mdns record rejected", extra={"instance": instance.name, "error": reason}
            )
        was_listed = instance.endpoint is not None and instance.probe.alive
        instance.endpoint, instance.service = None, service
        instance.probe = ProbeState(self._probe_failures, self._probe_interval)
        if reason != instance.rejected or was_listed:
            instance.rejected = reason
            self._notify()

    async def _probe(self, endpoint: Endpoint) -> bool:
        """Whether the endpoint accepts a TCP connection within `probe_timeout`."""
        try:
            async with asyncio.timeout(self._probe_timeout):
                _, writer = await asyncio.open_connection(endpoint.address, endpoint.port)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(self._probe_timeout):
                await writer.wait_closed()
        return True

    def _in_cache(self, instance: _Instance) -> bool:
        zc = self._zc
        if zc is None:
            return True  # no cache to ask during an outage: keep probing
        return AsyncServiceInfo(self._type, instance.name).load_from_cache(zc.zeroconf)

    def _forget(self, instance: _Instance) -> None:
        if self._instances.get(instance.name.lower()) is instance:
            del self._instances[instance.name.lower()]
        task = self._followers.get(instance)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if instance.endpoint is not None and instance.probe.alive:
            logger.info("mdns endpoint gone", extra={"endpoint": instance.endpoint.id})
        if instance.endpoint is not None or instance.rejected:
            self._notify()

    async def _wait_dirty(self, instance: _Instance, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await instance.dirty.wait()

    def _log_probe(self, endpoint: Endpoint, alive: bool) -> None:
        event = "mdns endpoint confirmed" if alive else "mdns endpoint dropped"
        logger.info(event, extra={"endpoint": endpoint.id, "authority": endpoint.authority})

    # -- watches --------------------------------------------------------------------------

    def _event_for(self, service: str) -> WatchEvent:
        if self._outage is not None:
            return Outage(self._outage)
        listed = [
            i.endpoint
            for i in self._instances.values()
            if i.endpoint is not None and i.endpoint.service == service and i.probe.alive
        ]
        rejected = sum(1 for i in self._instances.values() if i.rejected and i.service == service)
        return Snapshot(sorted_endpoints(listed), rejected)

    def _wake(self, service: str) -> None:
        """Start probing a newly watched service's instances."""
        for instance in self._instances.values():
            if instance.endpoint is not None and instance.endpoint.service == service:
                instance.dirty.set()

    def _notify(self) -> None:
        for watcher in self._watchers:
            watcher.changed.set()

    # -- task ownership -------------------------------------------------------------------

    def _spawn_follower(self, instance: _Instance) -> None:
        task = asyncio.get_running_loop().create_task(
            self._follow(instance), name=f"mdns-follow-{instance.name}"
        )
        self._followers[instance] = task
        task.add_done_callback(functools.partial(self._follower_done, instance))

    def _follower_done(self, instance: _Instance, task: asyncio.Task[None]) -> None:
        if self._followers.get(instance) is task:
            del self._followers[instance]
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("mdns follower failed", extra={"instance": instance.name}, exc_info=exc)

    def _own_broadcast(self, awaitable: Awaitable[Any]) -> asyncio.Future[Any]:
        """Keep zeroconf's announcement or goodbye task until it is done."""
        broadcast = asyncio.ensure_future(awaitable)
        self._broadcasts.add(broadcast)
        broadcast.add_done_callback(self._broadcast_done)
        return broadcast

    def _broadcast_done(self, broadcast: asyncio.Future[Any]) -> None:
        self._broadcasts.discard(broadcast)
        if not broadcast.cancelled() and (exc := broadcast.exception()) is not None:
            logger.warning("mdns broadcast failed", extra={"error": repr(exc)})


def _check_advertised_address(endpoint: Endpoint) -> None:
    try:
        ipaddress.IPv4Address(endpoint.address)
    except ValueError:
        raise RegistryRejected(
            f"endpoint {endpoint.id!r} address {endpoint.address!r} is not an IPv4 address;"
            " mdns advertises IPv4 addresses (set --advertise-addr to one)"
        ) from None


async def _close_zeroconf(zc: AsyncZeroconf) -> None:
    """Close a zeroconf instance, bounded: its goodbyes may wait on a dead interface."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await zc.async_close()
    except TimeoutError:
        logger.warning("mdns close timed out")
        zc.zeroconf.close()


async def _wait_cancelled(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Await cancelled tasks: their CancelledError is theirs, a cancel of ours propagates."""
    if tasks:
        await asyncio.wait(tasks)
