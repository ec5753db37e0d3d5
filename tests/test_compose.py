"""What can be checked of the compose deployment without a Docker engine: the file parses, every
service's command exists (the CLI subcommands and their options, as the image installs them), its
environment names are settings of db/settings.py (documented in docs/CONFIG.md), and the GPU
worker reserves a GPU."""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from db import settings

REPO = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
OURS = [name for name, svc in SERVICES.items() if str(svc.get("image", "")).startswith("${VIDCLASS")]
# Read by other programs, not by vidclass.
FOREIGN_ENV = {"OMP_WAIT_POLICY", "FLOWER_BASIC_AUTH", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}


def test_the_services_of_a_deployment_are_there():
    for name in ("redis", "postgres", "migrate", "api", "download-worker", "classify-worker",
                 "gpu-worker", "flower"):
        assert name in SERVICES, name
    assert set(OURS) >= {"migrate", "api", "download-worker", "classify-worker", "gpu-worker", "flower"}
    assert SERVICES["migrate"]["command"] == ["vidclass", "db", "upgrade"]
    for name in ("redis", "postgres", "api", "download-worker", "classify-worker", "gpu-worker"):
        assert "healthcheck" in SERVICES[name], f"{name} has no health check"
    for name in OURS:
        assert "vidclass-data:/data" in SERVICES[name]["volumes"], f"{name} does not share /data"


def test_api_keys_are_required_and_storage_is_shared():
    for name in OURS:
        env = SERVICES[name]["environment"]
        assert env["VIDCLASS_REQUIRE_KEYS"] == "1"
        assert env["UPLOAD_DIR"].startswith("/data/") and env["THUMBNAIL_DIR"].startswith("/data/")
        assert env["DOWNLOAD_DIR"].startswith("/data/")
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://")


def test_environment_names_are_settings():
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", (REPO / "docs" / "CONFIG.md").read_text(), re.M))
    names = {s.name for s in settings.SETTINGS}
    assert documented == names
    for name, svc in SERVICES.items():
        for var in svc.get("environment") or {}:
            assert var in names or var in FOREIGN_ENV, f"{name}: {var} is not a setting (db/settings.py)"


def test_gpu_worker_reserves_a_gpu_and_is_optional():
    gpu = SERVICES["gpu-worker"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert gpu["environment"]["CLASSIFY_DEVICE"] == "cuda"
    for name in OURS:
        if name != "gpu-worker":
            assert "deploy" not in SERVICES[name] and "profiles" not in SERVICES[name]


def _parse(argv: list[str]):
    """The service's command through the real `vidclass` parser (as the image's entry point
    builds it), without running it."""
    import argparse

    from vidclass import cli

    parser = cli.build_parser() if hasattr(cli, "build_parser") else None
    if parser is None:
        pytest.skip("vidclass.cli has no build_parser()")
    return parser.parse_args(argv[1:])


@pytest.mark.parametrize("service", ["migrate", "api", "download-worker", "classify-worker",
                                     "gpu-worker", "flower"])
def test_every_command_exists(service):
    argv = SERVICES[service]["command"]
    assert argv[0] == "vidclass"        # the console script pyproject installs
    args = _parse(argv)
    assert callable(args.func)
    if argv[1] == "worker":
        from service.processes import worker_argv

        celery = worker_argv(args.concurrency or 1, args.queues, args.name, "info", args.pool)
        queues = celery[celery.index("-Q") + 1].split(",")
        if service == "download-worker":
            assert celery[celery.index("-P") + 1] == "threads" and "classify" not in queues
        else:
            assert "classify" in queues and celery[celery.index("-P") + 1] == "prefork"


def test_celery_and_flower_subcommands_exist():
    from service.processes import flower_argv

    for argv in ([sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--help"],
                 flower_argv("127.0.0.1", 5555)[:6] + ["--help"]):
        out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]


def test_healthchecks_name_the_worker_nodes():
    for service in ("download-worker", "classify-worker", "gpu-worker"):
        argv = SERVICES[service]["command"]
        node = argv[argv.index("--name") + 1].split("@")[0]
        assert f"-d {node}@$$HOSTNAME" in SERVICES[service]["healthcheck"]["test"][1]
        shlex.split(SERVICES[service]["healthcheck"]["test"][1])


def test_dockerfile_builds_cpu_and_gpu_images():
    text = (REPO / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in text and "ARG ONNXRUNTIME=onnxruntime" in text
    # The ONNX exports are made into the image, where the workers look for them.
    assert "ENV VIDCLASS_CACHE_DIR=/opt/vidclass-cache" in text and "RUN vidclass prepare" in text
    assert text.index("RUN vidclass prepare") > text.index("COPY --from=nsfwjs")
    gpu_build = SERVICES["gpu-worker"]["build"]["args"]
    assert gpu_build["BASE_IMAGE"].startswith("nvidia/cuda:") and gpu_build["ONNXRUNTIME"] == "onnxruntime-gpu"
