# clip-grpc images. One Dockerfile, three targets:
#   all     (the default) the gRPC server and the REST bridge, serving /model when it holds a
#           model and the shipped demo model otherwise
#   server  the gRPC server only (torch)
#   bridge  the REST bridge only: no torch, a fraction of the size (README "Docker")
#
#   docker build -t clip-grpc .
#   docker run -v /path/to/host/model:/model -p 8081:8081 -p 50051:50051 clip-grpc
#   docker run clip-grpc server --max-batch-size 64      # only the gRPC server, from `all`
#   docker build --target server -t clip-grpc:server .
#   docker build --target bridge -t clip-grpc:bridge .
#   docker run -e REST_BRIDGE_GRPC_TARGET=host:50051 -p 8081:8081 clip-grpc:bridge
#
# CPU torch by default. For NVIDIA GPUs pick a CUDA wheel index of the same torch release and
# run with --gpus all (the CUDA wheels carry their own CUDA runtime; the host needs the driver):
#   docker build --build-arg TORCH_INDEX=cu128 -t clip-grpc:cuda .
ARG PYTHON_VERSION=3.11

# The repository's three wheels (clip-grpc, clip-grpc-client, clip-grpc-bridge), built once.
FROM python:${PYTHON_VERSION}-slim AS wheels
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir "hatchling==1.33.0"
WORKDIR /src
COPY pyproject.toml hatch_build.py README.md LICENSE ./
COPY distributions ./distributions
COPY clip_grpc ./clip_grpc
COPY rest_bridge ./rest_bridge
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels \
        . distributions/client distributions/bridge

FROM python:${PYTHON_VERSION}-slim AS torch-venv
ARG TORCH_VERSION=2.13.0
# A wheel index under https://download.pytorch.org/whl/: cpu, or one of the CUDA ones the torch
# release is built for, such as cu128.
ARG TORCH_INDEX=cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first and from PyTorch's index: PyPI's Linux torch is the much larger CUDA build.
RUN pip install --no-cache-dir --index-url "https://download.pytorch.org/whl/${TORCH_INDEX}" \
        "torch==${TORCH_VERSION}"

# Regular (not editable) installs: the packages and the demo model land in the venv. -I keeps
# the working directory off sys.path, so the checks read the installed copy.
FROM torch-venv AS server-venv
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir /wheels/clip_grpc-*.whl /wheels/clip_grpc_client-*.whl \
    && python -I -c "from clip_grpc.config import DEMO_MODEL_DIR as d; \
assert (d / 'config.json').is_file(), d"

FROM torch-venv AS all-venv
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir /wheels/*.whl \
    && python -I -c "import rest_bridge.app; from clip_grpc.config import DEMO_MODEL_DIR as d; \
assert (d / 'config.json').is_file(), d"

FROM python:${PYTHON_VERSION}-slim AS bridge-venv
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir /wheels/clip_grpc_client-*.whl /wheels/clip_grpc_bridge-*.whl \
    && python -I -c "import importlib.util as u, rest_bridge.app; \
assert u.find_spec('torch') is None, 'torch in the bridge image'"

# What the three images share: a user, the entrypoint, the health check, the ports.
FROM python:${PYTHON_VERSION}-slim AS runtime
RUN groupadd --system --gid 10001 clip \
    && useradd --system --uid 10001 --gid clip --create-home --home-dir /home/clip clip \
    && mkdir /model
# --chmod needs BuildKit (the default builder since Docker 23).
COPY --chmod=0755 docker/entrypoint.sh /app/
COPY docker/healthcheck.py /app/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    CLIP_GRPC_PORT=50051 \
    REST_BRIDGE_PORT=8081
USER 10001:10001
WORKDIR /home/clip
EXPOSE 50051 8081 9090
# Loading and warming up a large model (ViT-L/14 on CPU) takes a while: a generous start period.
HEALTHCHECK --interval=15s --timeout=10s --start-period=180s --retries=3 \
    CMD ["python", "/app/healthcheck.py"]
ENTRYPOINT ["/app/entrypoint.sh"]

FROM runtime AS server
COPY --from=server-venv /opt/venv /opt/venv
CMD ["server"]

FROM runtime AS bridge
COPY --from=bridge-venv /opt/venv /opt/venv
CMD ["bridge"]

# Last, so a plain `docker build .` builds it.
FROM runtime AS all
COPY --from=all-venv /opt/venv /opt/venv
CMD ["all"]
