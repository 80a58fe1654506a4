# clip-grpc: the gRPC server and the REST bridge, serving /model when it holds a model and the
# shipped demo model otherwise.
#
#   docker build -t clip-grpc .
#   docker run -v /path/to/host/model:/model -p 8081:8081 -p 50051:50051 clip-grpc
#   docker run clip-grpc server --max-batch-size 64      # only the gRPC server
#   docker run -e REST_BRIDGE_GRPC_TARGET=host:50051 clip-grpc bridge   # only the bridge
#
# CPU torch by default. For NVIDIA GPUs pick a CUDA wheel index of the same torch release and
# run with --gpus all (the CUDA wheels carry their own CUDA runtime; the host needs the driver):
#   docker build --build-arg TORCH_INDEX=cu128 -t clip-grpc:cuda .
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS builder
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
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY clip_grpc ./clip_grpc
COPY rest_bridge ./rest_bridge
# A regular (not editable) install: the packages and the demo model land in the venv.
# -I keeps /src off sys.path, so the check reads the installed copy.
RUN pip install --no-cache-dir . \
    && python -I -c "from clip_grpc.config import DEMO_MODEL_DIR as d; \
assert (d / 'config.json').is_file(), d"

FROM python:${PYTHON_VERSION}-slim AS runtime
RUN groupadd --system --gid 10001 clip \
    && useradd --system --uid 10001 --gid clip --create-home --home-dir /home/clip clip \
    && mkdir /model
COPY --from=builder /opt/venv /opt/venv
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
CMD ["all"]
