# One image for web, worker, migrate and the sandbox simulator; compose picks the command.
# BASE_IMAGE: any image with Python 3.11+ and pip on PATH as `python` / `pip`.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \
    PATH="/app/.venv/bin:$PATH" PYTHONPATH=/app
WORKDIR /app
RUN pip install --no-cache-dir uv
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
COPY . .
# Volume mount points exist and belong to console: Docker would create a missing one owned by root.
RUN useradd --create-home --uid 10001 console \
    && mkdir -p /app/var /data/uploads && chown -R console:console /app/var /data
USER console
EXPOSE 8000
CMD ["uvicorn", "web.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--no-proxy-headers"]
