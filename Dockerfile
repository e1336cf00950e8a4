# The GPU runner: the shipped (or a mounted) base model served with onnxruntime-node's CUDA
# provider. Build from the repository root:
#   docker build -t pica-runner .
#   docker run --gpus all -p 8400:8400 -e RUNNER_SECRET=... pica-runner \
#     --edge-url https://edge.example --public-url http://this-host:8400
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

RUN apt-get update \
  && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
  && curl -fsSL https://deb.nodesource.com/setup_20.x | bash - \
  && apt-get install -y --no-install-recommends nodejs \
  && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# .npmrc runs no dependency's install script; onnxruntime-node's is run here on purpose and
# fetches its CUDA 12 provider libraries (the CPU build is inside the package either way).
RUN npm ci --omit=dev --no-audit --no-fund \
  && ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install

COPY tsconfig.json ./
COPY src ./src
COPY gpu-runner ./gpu-runner
COPY models ./models

ENV RUNNER_HOST=0.0.0.0 RUNNER_PORT=8400 RUNNER_PROVIDER=cuda RUNNER_JOBS_DIR=/data/jobs RUNNER_ADAPTER_DIR=/data/adapters RUNNER_CACHE_DIR=/data/models
VOLUME /data
EXPOSE 8400
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "--import", "tsx", "gpu-runner/server/main.ts"]
