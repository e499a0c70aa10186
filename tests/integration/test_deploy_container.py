"""The container image without Docker: build the wheel the Dockerfile installs, install it into
a fresh virtual environment, run the image's ENTRYPOINT + CMD against the simulator, and run the
image's HEALTHCHECK command against it.

The fresh environment gets only the keywatch wheel (``pip install --no-deps``). Installing the
dependencies too would need the package index and take a minute, so they come from the test
environment's site-packages through PYTHONPATH. That directory has no ``monitor`` package (the
project is installed there in editable mode, through a .pth file, which PYTHONPATH does not
read), so ``monitor`` can only come from the wheel; a test checks that it does.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from monitor.simulator.server import SimulatorServer
from monitor.simulator.tenant import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Simulator
from tests.support.deploy import (
    DEPLOY_DIR,
    REPO_ROOT,
    ManagedProcess,
    dockerfile_instructions,
    exec_form,
    free_port,
    wait_for,
)

pytestmark = pytest.mark.timeout(180)

IMAGE_CONFIG = DEPLOY_DIR / "container" / "keywatch.yaml"
IMAGE_CONFIG_PATH = "/etc/keywatch/keywatch.yaml"  # where the Dockerfile copies it
BUILD_INPUTS = ("pyproject.toml", "README.md", "monitor")
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Image:
    """What the Dockerfile's runtime stage declares."""

    entrypoint: list[str]
    cmd: list[str]
    healthcheck: list[str]
    env: dict[str, str]
    stop_signal: str


@dataclass(frozen=True)
class FreshVenv:
    root: Path
    wheel: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"


def read_image() -> Image:
    instructions = dockerfile_instructions(DEPLOY_DIR / "Dockerfile")
    last_stage = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    runtime = instructions[last_stage:]

    def last(keyword: str) -> str:
        return [arguments for name, arguments in runtime if name == keyword][-1]

    env: dict[str, str] = {}
    for name, arguments in runtime:
        if name == "ENV":
            for item in shlex.split(arguments):
                key, _, value = item.partition("=")
                env[key] = value
    return Image(
        entrypoint=exec_form(last("ENTRYPOINT")),
        cmd=exec_form(last("CMD")),
        healthcheck=exec_form(last("HEALTHCHECK").split("CMD ", 1)[1]),
        env=env,
        stop_signal=last("STOPSIGNAL"),
    )


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> FreshVenv:
    """The keywatch wheel, built from a copy of the sources, installed into a new venv."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    source.mkdir()
    for name in BUILD_INPUTS:
        origin = REPO_ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, source / name)
    wheels = work / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = wheels.glob("keywatch-*.whl")
    root = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = str(root / "bin" / "python")
    install = subprocess.run(
        [*pip, "--python", python, "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return FreshVenv(root=root, wheel=wheel)


def venv_env(venv: FreshVenv, image: Image, home: Path) -> dict[str, str]:
    """The image's ENV, the fresh venv first on PATH, dependencies from the test venv."""
    paths = sysconfig.get_paths()
    dependencies = dict.fromkeys([paths["purelib"], paths["platlib"]])
    return {
        **image.env,
        "PATH": f"{venv.bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "PYTHONPATH": os.pathsep.join(dependencies),
    }


def as_in_image(argv: list[str], venv: FreshVenv) -> list[str]:
    """The image's command with its program taken from the fresh venv (as the image's PATH)."""
    program = venv.bin / argv[0]
    assert program.exists(), f"{argv[0]} is not in the fresh venv"
    return [str(program), *argv[1:]]


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    with SimulatorServer(Simulator(tenants=1)) as server:
        yield server


def test_the_wheel_is_what_the_fresh_venv_imports(fresh_venv: FreshVenv, tmp_path: Path) -> None:
    env = venv_env(fresh_venv, read_image(), tmp_path)
    result = subprocess.run(
        [str(fresh_venv.bin / "python"), "-c", "import monitor; print(monitor.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=True,
    )
    assert Path(result.stdout.strip()).is_relative_to(fresh_venv.root)
    assert (fresh_venv.bin / "keywatch").exists(), "the wheel's console script"


def test_image_entrypoint_serves_and_passes_its_healthcheck(
    fresh_venv: FreshVenv, simulator: SimulatorServer, tmp_path: Path
) -> None:
    image = read_image()
    assert image.entrypoint + image.cmd == ["keywatch", "run", "--config", IMAGE_CONFIG_PATH]
    port = free_port()
    state_dir = tmp_path / "state"  # the image's VOLUME
    state_dir.mkdir()
    # The image's own configuration; only the tenant's address and the paths differ, because
    # the simulator speaks http on loopback while `domain` means https://DOMAIN.
    config = yaml.safe_load(IMAGE_CONFIG.read_text(encoding="utf-8"))
    config["listen"] = f"127.0.0.1:{port}"
    config["data_dir"] = str(state_dir)
    tenant = config["tenants"][0]
    del tenant["domain"]
    tenant["base_url"] = simulator.tenant_url("tenant-1")
    config_path = tmp_path / "keywatch.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")

    env = {
        **venv_env(fresh_venv, image, tmp_path),
        "KEYWATCH_DATA_DIR": str(state_dir),
        "KEYWATCH_STATE": f"sqlite:///{state_dir}/state.db",
        "AUTH0_TENANT_NAME": "image",
        "AUTH0_CLIENT_ID": DEFAULT_CLIENT_ID,
        "AUTH0_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
    }
    argv = as_in_image(image.entrypoint + image.cmd, fresh_venv)
    argv[argv.index(IMAGE_CONFIG_PATH)] = str(config_path)
    healthcheck = as_in_image(image.healthcheck, fresh_venv)
    health_env = {**env, "KEYWATCH_HEALTHCHECK_URL": f"http://127.0.0.1:{port}/healthz"}
    base = f"http://127.0.0.1:{port}"

    def answers(path: str) -> bool:
        try:
            return httpx.get(base + path, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    daemon = ManagedProcess("keywatch-image", argv, log_dir=tmp_path, env=env, cwd=tmp_path)
    with daemon:
        wait_for(
            lambda: answers("/readyz"),
            timeout=START_TIMEOUT,
            what="/readyz",
            diagnostics=daemon.log_tail,
        )
        assert answers("/healthz")
        metrics = httpx.get(base + "/metrics", timeout=5).text
        assert 'keywatch_tenant_up{tenant="image"} 1.0' in metrics, daemon.log_tail()
        assert (state_dir / "state.db").exists(), "state lives on the volume"

        check = subprocess.run(healthcheck, env=health_env, capture_output=True, timeout=30)
        assert check.returncode == 0, check.stderr.decode()

        assert image.stop_signal == "SIGTERM"
        assert daemon.stop(timeout=15) == 0, daemon.log_tail()

    after = subprocess.run(healthcheck, env=health_env, capture_output=True, timeout=30)
    assert after.returncode != 0, "the healthcheck fails once keywatch is gone"
    log = daemon.log_path.read_text(encoding="utf-8")
    assert DEFAULT_CLIENT_SECRET not in log
    assert all(json.loads(line) for line in log.splitlines() if line.strip()), "log_format json"


def test_the_installed_demo_runs_from_an_empty_directory(
    fresh_venv: FreshVenv, tmp_path: Path
) -> None:
    """``pip install keywatch`` and ``keywatch demo`` anywhere: the demo configuration comes
    from the package, not from the repository's working tree."""
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**venv_env(fresh_venv, read_image(), tmp_path), "TMPDIR": str(tmp_path)}
    argv = [str(fresh_venv.bin / "keywatch"), "demo", "--port", str(free_port())]
    demo = ManagedProcess(
        "demo", [*argv, "--rotate-every", "4"], log_dir=tmp_path, env=env, cwd=empty
    )
    with demo:
        wait_for(
            lambda: "signing key rotated on demo" in demo.log_path.read_text(),
            timeout=START_TIMEOUT,
            what="a rotation detected by the installed demo",
            diagnostics=demo.log_tail,
        )
        assert demo.process is not None
        demo.process.send_signal(signal.SIGINT)
        assert demo.process.wait(timeout=15) == 0, demo.log_tail()
    log = demo.log_path.read_text()
    assert "demo: stopped" in log and "Traceback" not in log
    assert list(empty.iterdir()) == [], "nothing is written to the working directory"
    assert not list(tmp_path.glob("keywatch-demo-*")), "the temporary state is removed"
