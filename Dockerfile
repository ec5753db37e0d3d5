# One image for the API and the workers; docker-compose.yml picks the command.

# nsfwjs's MobileNetV2 model files (vidclass/features/drawing_net.py), fetched from the npm registry at build
# time with the version and integrity pinned in the Makefile (read from it, one source of truth).
FROM node:20-slim AS nsfwjs
WORKDIR /src
COPY Makefile tools/fetch_nsfwjs.sh ./
RUN version="$(sed -n 's/^NSFWJS_VERSION := //p' Makefile)" && \
    sh fetch_nsfwjs.sh "/share/nsfwjs-$version" "$version" "$(sed -n 's/^NSFWJS_INTEGRITY := //p' Makefile)"

# The CPU image: python:3.11-slim. The GPU image (docs/deployment.md) builds the same file on a
# CUDA runtime base with --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
# --build-arg ONNXRUNTIME=onnxruntime-gpu (and torch's CUDA wheel index in PIP_OPTIONS).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
# ffmpeg lets yt-dlp merge separate audio/video downloads; the decoder itself is PyAV's own.
# A CUDA base image has no Python: Ubuntu's python3 then (3.11 or newer is all we need).
RUN apt-get update && \
    apt-get install -y --no-install-recommends ffmpeg $(command -v python3 >/dev/null || echo python3 python3-venv) && \
    rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
# Extra pip options, e.g. an index with CPU-only torch wheels to keep the CPU image small, or
# torch's CUDA wheels (https://download.pytorch.org/whl/cu128) for the GPU image.
ARG PIP_OPTIONS=""
# onnxruntime (CPU) or onnxruntime-gpu (the CUDA execution provider), at the pinned version
# unless ONNXRUNTIME_VERSION says otherwise.
ARG ONNXRUNTIME=onnxruntime
ARG ONNXRUNTIME_VERSION=""
COPY pyproject.toml README.md ./
COPY vidclass vidclass
COPY api api
COPY worker worker
COPY db db
COPY service service
RUN pip install --no-cache-dir $PIP_OPTIONS -e . && \
    if [ "$ONNXRUNTIME" != onnxruntime ]; then \
      version="${ONNXRUNTIME_VERSION:-$(pip show onnxruntime | sed -n 's/^Version: //p')}" && \
      pip uninstall -y onnxruntime && pip install --no-cache-dir "$ONNXRUNTIME==$version"; \
    fi
COPY . .
# Where drawing_net looks by default: <sys.prefix>/share/nsfwjs-<version>/mobilenet_v2, and
# sys.prefix is the venv's (/opt/venv), on the CPU and the GPU base alike.
COPY --from=nsfwjs /share/ /opt/venv/share/
# The ONNX exports of the nets, made at build time into the image: workers and the CLI start on
# them. Keyed by the weights and the modules' source, so a changed module is exported anew at
# first use instead of reusing a stale file.
ENV VIDCLASS_CACHE_DIR=/opt/vidclass-cache
RUN vidclass prepare
ENV OMP_WAIT_POLICY=PASSIVE \
    UPLOAD_DIR=/data/uploads \
    DOWNLOAD_DIR=/data/downloads \
    THUMBNAIL_DIR=/data/thumbnails
EXPOSE 5000
CMD ["vidclass", "api", "--host", "0.0.0.0", "--port", "5000"]
