# One image for the API and the workers; docker-compose.yml picks the command.

# nsfwjs's MobileNetV2 model files (vidclass/drawing_net.py), fetched from the npm registry at build
# time with the version and integrity pinned in the Makefile (read from it, one source of truth).
FROM node:20-slim AS nsfwjs
WORKDIR /src
COPY Makefile tools/fetch_nsfwjs.sh ./
RUN version="$(sed -n 's/^NSFWJS_VERSION := //p' Makefile)" && \
    sh fetch_nsfwjs.sh "/share/nsfwjs-$version" "$version" "$(sed -n 's/^NSFWJS_INTEGRITY := //p' Makefile)"

FROM python:3.11-slim
# ffmpeg lets yt-dlp merge separate audio/video downloads; the decoder itself is PyAV's own.
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Extra pip options, e.g. an index with CPU-only torch wheels, to keep the image small.
ARG PIP_OPTIONS=""
COPY pyproject.toml README.md ./
COPY vidclass vidclass
COPY api api
COPY worker worker
COPY db db
RUN pip install --no-cache-dir $PIP_OPTIONS -e .
COPY . .
# Where drawing_net looks by default: <sys.prefix>/share/nsfwjs-<version>/mobilenet_v2.
COPY --from=nsfwjs /share/ /usr/local/share/
ENV OMP_WAIT_POLICY=PASSIVE \
    UPLOAD_DIR=/data/uploads \
    THUMBNAIL_DIR=/data/thumbnails
EXPOSE 5000
CMD ["vidclass", "api", "--host", "0.0.0.0", "--port", "5000"]
