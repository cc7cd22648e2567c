# meetnet's container image: one image for every command (gateway, processor, api, simulate,
# db migrate, retention run, rollups rebuild, broker-auth, ...); k8s/ runs it with the
# command as the container's args. Non-root (uid 10001), no shell needed at run time, a
# read-only root filesystem works (writes go to /tmp only).
#
#   docker build -t ghcr.io/meetnet/meetnet:0.1.0 .
#
# Not built by the test suite (the CI machines have no container engine); `make test` scans it
# with checkov. The base is pinned by tag (Python 3.11 on Debian 12, like the development
# machines); add its digest (python:3.11.11-slim-bookworm@sha256:...) when building releases.
FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY meetnet meetnet
COPY ingest ingest
COPY stream stream
COPY store store
COPY api api
COPY simulators simulators
COPY usecases usecases
# The runtime dependencies only (pinned in pyproject.toml); no dev, local or k8s extras.
RUN python -m venv /opt/meetnet && /opt/meetnet/bin/pip install --no-compile .

FROM python:3.11.11-slim-bookworm
RUN groupadd --system --gid 10001 meetnet \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin meetnet
COPY --from=build /opt/meetnet /opt/meetnet
ENV PATH=/opt/meetnet/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MEETNET_MANAGE_LOCAL_SERVICES=false \
    MEETNET_LOG_FORMAT=json \
    MEETNET_HEALTH_HOST=0.0.0.0
USER 10001:10001
WORKDIR /tmp
# 8000: the query API; 8081: the workers' health endpoint (MEETNET_HEALTH_PORT).
EXPOSE 8000 8081
# Each component has its own probe (k8s/: /health for the API, /live and /ready on
# MEETNET_HEALTH_PORT for the workers); one image-wide HEALTHCHECK cannot know which runs.
# checkov:skip=CKV_DOCKER_2:probes are per component, in the Kubernetes manifests
ENTRYPOINT ["meetnet"]
CMD ["--help"]
