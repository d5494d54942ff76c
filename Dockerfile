# syntax=docker/dockerfile:1
# One image per Labelgate service, all from this file: `docker build --target router -t labelgate-router .`
# (targets: review-api, labeler, router, metrics). Each image holds the service's own package, the shared
# libraries it uses (the core, and quality if it needs it) and their locked dependencies (uv.lock) — nothing of
# the other services — and runs as an unprivileged user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: a virtual environment per service, from the lock ---------------------------------------------------

FROM ${PYTHON_IMAGE} AS build
# Keep in step with UV_VERSION in the Makefile.
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore "uv==${UV_VERSION}"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/opt/labelgate/venv
WORKDIR /src
# uv reads the whole workspace to use the lock, so every member's pyproject.toml comes in (no member's code).
COPY uv.lock pyproject.toml ./
COPY core/pyproject.toml core/
COPY client/pyproject.toml client/
COPY cli/pyproject.toml cli/
COPY quality/pyproject.toml quality/
COPY services/review-api/pyproject.toml services/review-api/
COPY services/labeler/pyproject.toml services/labeler/
COPY services/router/pyproject.toml services/router/
COPY services/metrics/pyproject.toml services/metrics/

# Per service: third-party dependencies first (a layer that changes only with the lock), then the shared
# libraries (core, quality) and the service itself. uv installs only what the service's package needs from
# them, as wheels (not editable), so that the runtime image needs no source tree.
FROM build AS build-review-api
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package labelgate-review-api
COPY core/src core/src
COPY quality/src quality/src
COPY services/review-api/src services/review-api/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package labelgate-review-api

FROM build AS build-labeler
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package labelgate-labeler
COPY core/src core/src
COPY quality/src quality/src
COPY services/labeler/src services/labeler/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package labelgate-labeler

FROM build AS build-router
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package labelgate-router
COPY core/src core/src
COPY quality/src quality/src
COPY services/router/src services/router/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package labelgate-router

FROM build AS build-metrics
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package labelgate-metrics
COPY core/src core/src
COPY quality/src quality/src
COPY services/metrics/src services/metrics/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package labelgate-metrics

# -- runtime: the same Python, the environment, an unprivileged user ------------------------------------------

FROM ${PYTHON_IMAGE} AS runtime
# A fixed numeric id, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --system --gid 10001 labelgate \
    && useradd --system --uid 10001 --gid labelgate --home-dir /var/lib/labelgate --create-home \
       --shell /usr/sbin/nologin labelgate
ENV PATH=/opt/labelgate/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LABELGATE_DATA_DIR=/var/lib/labelgate
WORKDIR /var/lib/labelgate
USER 10001:10001

FROM runtime AS review-api
COPY --from=build-review-api /opt/labelgate/venv /opt/labelgate/venv
ENV LABELGATE_REVIEW_API_HOST=0.0.0.0 LABELGATE_REVIEW_API_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
CMD ["labelgate-review-api"]

FROM runtime AS labeler
COPY --from=build-labeler /opt/labelgate/venv /opt/labelgate/venv
ENV LABELGATE_LABELER_HOST=0.0.0.0 LABELGATE_LABELER_PORT=8001
EXPOSE 8001
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8001/readyz', timeout=4)"]
CMD ["labelgate-labeler"]

FROM runtime AS router
COPY --from=build-router /opt/labelgate/venv /opt/labelgate/venv
ENV LABELGATE_ROUTER_HOST=0.0.0.0 LABELGATE_ROUTER_PORT=8002
EXPOSE 8002
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8002/readyz', timeout=4)"]
CMD ["labelgate-router"]

FROM runtime AS metrics
COPY --from=build-metrics /opt/labelgate/venv /opt/labelgate/venv
ENV LABELGATE_METRICS_HOST=0.0.0.0 LABELGATE_METRICS_PORT=8003
EXPOSE 8003
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8003/readyz', timeout=4)"]
CMD ["labelgate-metrics"]
