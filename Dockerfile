# One image for the API and the workers; docker-compose.yml picks the command.
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
ENV OMP_WAIT_POLICY=PASSIVE \
    UPLOAD_DIR=/data/uploads \
    THUMBNAIL_DIR=/data/thumbnails
EXPOSE 5000
CMD ["vidclass", "api", "--host", "0.0.0.0", "--port", "5000"]
