# One image for every process of the system: workers, the dispatcher, Flower, migrations and the simulator.
# What runs is chosen by the command (docker-compose.yml, deploy/k8s/); the default is a worker
# that consumes every queue.

# --- Build: wheels for the project and its runtime dependencies (no extras: not `test`, not
# `embedded`, the laptop's PostgreSQL and Redis, and not `report`, the charts of `aperture report`;
# every runtime dependency ships a wheel for amd64 and arm64, so the build needs no C toolchain).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY config/ config/
COPY models/ models/
COPY clients/ clients/
COPY services/ services/
COPY tasks/ tasks/
COPY workers/ workers/
COPY simulator/ simulator/
COPY cli/ cli/
RUN pip wheel --wheel-dir /wheels .

# --- Runtime.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    APERTURE_DATA_DIR=/tmp/aperture
RUN groupadd --system --gid 10001 aperture \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/aperture \
       --shell /usr/sbin/nologin aperture
COPY --from=build /wheels /wheels
# `pip install .` of the project, from the wheels built above: no index, nothing else.
RUN pip install --no-index --find-links=/wheels aperture-workers \
    && rm -rf /wheels
USER 10001:10001
WORKDIR /home/aperture
# 8080: simulator, 5555: Flower, 9808: a worker's Prometheus metrics.
EXPOSE 8080 5555 9808
# Exec form, no shell and no entrypoint wrapper: Celery is PID 1 and gets the container's TERM
# itself (warm shutdown).
CMD ["celery", "-A", "workers", "worker", "-Q", "aperture.submit,aperture.admit,celery,aperture.maintenance,aperture.poll", "-c", "4", "-E", "--without-gossip", "--without-mingle", "-l", "INFO"]
