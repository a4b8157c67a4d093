# syntax=docker/dockerfile:1
# Cascade: one image for the parent (the default command) and the children.
#
#   docker build -t cascade .
#   docker run --rm cascade config example > config.yaml
#   docker run --rm -v cascade-data:/data cascade init                     # schema, once
#   docker run -d -p 8001:8001 -v cascade-data:/data \
#       -e CASCADE_PARENT__PUBLIC_URL=http://parent-host:8001 cascade       # parent, SQLite
#   docker run -d -v /etc/cascade/child.yaml:/config/config.yaml:ro \
#       -e CASCADE_CONFIG=/config/config.yaml cascade run-child              # a child
#
# Runs as the unprivileged user 'cascade' (uid 10001); state lives in the /data volume
# (SQLite database, admin-token secret, a child's spool). deploy/compose/ runs a parent on
# PostgreSQL with two children; docs/deployment.md explains both.

ARG PYTHON_VERSION=3.12

# --- build: the wheel of this tree and of every dependency (no compiler in the final image)
FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cascade_cli ./cascade_cli
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[postgres,mysql]'

# --- run
FROM python:${PYTHON_VERSION}-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CASCADE_DATA_DIR=/data
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin cascade \
    && mkdir -p /data /config \
    && chown cascade:cascade /data /config \
    && chmod 0700 /data /config
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels 'cascade-cli[postgres,mysql]'
USER cascade
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8001
# One check for both roles (cascade_cli/healthcheck.py): a parent's GET /healthz on
# parent.port; for a child (PID 1 runs run-child), that the child process lives and, when
# child.metrics_port is set, that its /metrics answers. A child has no other HTTP port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "cascade_cli.healthcheck"]
# SIGTERM drains the parent (open long polls answer 'no work') and lets a child finish.
STOPSIGNAL SIGTERM
ENTRYPOINT ["cascade"]
CMD ["serve-parent"]
