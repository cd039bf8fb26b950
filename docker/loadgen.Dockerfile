# The in-cluster load generator's image (manifests/loadgen/): canary installed, run as a
# non-root user. Build from the repository root, the build context:
#   docker build -f docker/loadgen.Dockerfile -t REGISTRY/canary-loadgen:TAG .
#   docker push REGISTRY/canary-loadgen:TAG
# No models are copied: the load generator only sends requests to the mesh.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib

# The same uid/gid as the pods' securityContext (runAsUser/runAsGroup 10001).
RUN groupadd --system --gid 10001 canary \
 && useradd --system --uid 10001 --gid canary --home-dir /home/canary --create-home canary

WORKDIR /src
COPY pyproject.toml README.md ./
COPY canary ./canary
COPY serving ./serving
COPY payloads ./payloads
COPY mesh ./mesh
COPY loadtest ./loadtest
COPY verifier ./verifier
COPY commands ./commands
RUN pip install . && rm -rf /src

# The pods mount an emptyDir at /tmp (the root filesystem is read-only there).
WORKDIR /home/canary
USER 10001:10001
# The pods give the command: python -m loadtest.incluster master|worker
