# syntax=docker/dockerfile:1
# The worker image: `krakenfeed ingest`, `krakenfeed detect` and `krakenfeed replay-server`.
# Only the [workers] extra, pinned with hashes by docker/workers.lock. Build from the
# repository root: docker build -f docker/worker.Dockerfile -t krakenfeed .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m venv /opt/krakenfeed
COPY docker/workers.lock /tmp/requirements.lock
RUN /opt/krakenfeed/bin/pip install --no-cache-dir --no-deps \
        --require-hashes -r /tmp/requirements.lock
COPY pyproject.toml README.md ./
COPY workers ./workers
COPY operator ./operator
# The project itself is built into a wheel here, so setuptools never reaches the final image.
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/dist . \
    && /opt/krakenfeed/bin/pip install --no-cache-dir --no-deps /tmp/dist/krakenfeed-*.whl \
    && /opt/krakenfeed/bin/pip check

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 krakenfeed \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/krakenfeed --shell /usr/sbin/nologin krakenfeed
COPY --from=build /opt/krakenfeed /opt/krakenfeed
ENV PATH=/opt/krakenfeed/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The detector keeps its RocksDB state under /var/lib/krakenfeed/state (a volume in Kubernetes).
WORKDIR /var/lib/krakenfeed
USER 10001:10001
ENTRYPOINT ["krakenfeed"]
CMD ["--help"]
