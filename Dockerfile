# The arrowmesh image: the `sidecar` command as entrypoint, plus the compose stack's example
# model and pipeline under /opt/arrowmesh/examples.
#
#   docker build -t arrowmesh:local .
#   docker run --rm arrowmesh:local run --help
#   docker run --rm arrowmesh:local run --service embedder --app tcp://model:9000 ...
#
# tests/compose/ checks this file against the CLI (entrypoint, healthcheck port and path,
# ARROWMESH_* names, every package of pyproject.toml copied).

# Stage 1: the arrowmesh wheel, built from the sources alone.
FROM python:3.11-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY transport/ transport/
COPY discovery/ discovery/
COPY sidecar/ sidecar/
COPY bench/ bench/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# Stage 2: the runtime image.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# Dependencies in a layer of their own: rebuilt when pyproject.toml changes, not on every edit
# of the sources. Every dependency ships manylinux wheels, so no compiler is needed.
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import subprocess, sys, tomllib; deps = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']; subprocess.check_call([sys.executable, '-m', 'pip', 'install', *deps])" \
 && rm /tmp/pyproject.toml
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels

# A fixed uid, so a tmpfs volume can be mounted for it (uid=10001 in its mount options).
# /shm is where the compose stack mounts its shared-memory volume.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin arrowmesh \
 && install -d -o arrowmesh -g arrowmesh -m 0770 /shm
COPY examples/compose/ /opt/arrowmesh/examples/
WORKDIR /opt/arrowmesh
USER arrowmesh

# Shared-memory arenas small enough for Docker's default 64 MB /dev/shm: an arena's pages are
# reserved when the process starts, and one that does not fit leaves the process without
# shared memory (every tensor copied over the link). With a bigger --shm-size or a tmpfs
# volume, raise them (flag or -e; an environment variable wins over a --config file).
ENV ARROWMESH_SHM_ARENA_SIZE=16777216 \
    ARROWMESH_SHM_MAX_BYTES=33554432

# The mesh listener (peers). The local HTTP (7701), gRPC (7702) and admin (7790) listeners
# bind loopback unless --http-addr, --grpc-addr or --admin-addr say otherwise.
EXPOSE 7700

# Ready: listening, registered, and the app answers (`sidecar run`'s admin /readyz; 503
# otherwise). Slim images have no curl; urllib raises on a refused connection or a 503.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7790/readyz', timeout=2)"]

ENTRYPOINT ["sidecar"]
CMD ["run", "--help"]
