# streamproc: worker, exporter and simulator in one image (docker-compose.yml picks the command).
# Slim and non-root; the base is pinned to an exact Python release. Every runtime dependency
# ships manylinux wheels for CPython 3.11, so no compiler is needed.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamproc ./streamproc
RUN python -m venv /opt/streamproc && /opt/streamproc/bin/pip install .

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 streamproc \
    && useradd --system --uid 10001 --gid streamproc --create-home \
        --home-dir /var/lib/streamproc --shell /usr/sbin/nologin streamproc
COPY --from=build /opt/streamproc /opt/streamproc
ENV PATH=/opt/streamproc/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STREAMPROC_BIND=0.0.0.0 \
    STREAMPROC_STATE_DIR=/var/lib/streamproc
WORKDIR /var/lib/streamproc
USER 10001:10001
# worker /metrics, exporter /metrics + /api/kpis
EXPOSE 6066 9464
ENTRYPOINT ["streamproc"]
CMD ["worker"]
