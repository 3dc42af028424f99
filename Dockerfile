# syntax=docker/dockerfile:1
# fairpack's image: `fairpack serve` (the manifests run it with their own args).
#
#   docker build -t REGISTRY/fairpack:0.1.0 .
#
# Two stages: the first builds wheels (fairpack's own, pure Python, and its dependencies,
# all binary wheels from PyPI); the final one installs them into a venv on python:3.11-slim
# with nothing else: no compiler, no pip in the venv, no wheels left in a layer, no root.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scoring ./scoring
COPY extender ./extender
COPY benchmarks ./benchmarks
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/fairpack/bin:$PATH
# The wheels are bind-mounted from the build stage for this one step, never copied into a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv --without-pip /opt/fairpack \
    && python -m pip --python /opt/fairpack/bin/python install --no-cache-dir --no-index \
        --no-compile /wheels/*.whl \
    && /opt/fairpack/bin/python -m compileall -q /opt/fairpack/lib \
    && /opt/fairpack/bin/fairpack --help > /dev/null
# Not root: the uid the manifests run it as (runAsUser 65532), no home, no shell needed.
USER 65532:65532
# 8888: extender verbs; 8443: webhooks, health and metrics over TLS.
EXPOSE 8888 8443
ENTRYPOINT ["/opt/fairpack/bin/fairpack"]
CMD ["serve"]
