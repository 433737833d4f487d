"""Fixtures for real-browser tests: a private JupyterLab 4 or Notebook 7 server and headless Chromium."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
CHROMIUM = os.environ.get("LORA_NB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
NOTIFICATIONS = {"fetchNews": "false", "checkForUpdates": False}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


APPS = {  # front end → (python -m module, app config class, page that answers when ready, notebook URL prefix)
    "lab": ("jupyterlab", "LabApp", "/lab", "/lab/tree/"),
    "notebook": ("notebook", "JupyterNotebookApp", "/tree", "/notebooks/"),
}


class LabServer:
    """One JupyterLab 4 or Notebook 7 process on 127.0.0.1 with its own token, settings, workspaces, config."""

    def __init__(self, disabled_extensions: tuple[str, ...] = (), app: str = "lab") -> None:
        self.app = app
        self.home = Path(tempfile.mkdtemp(prefix="lora_nb_e2e_"))
        self.root = self.home / "notebooks"
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.disabled_extensions = disabled_extensions
        self.proc: subprocess.Popen | None = None
        self.log = self.home / "server.log"

    def _env(self) -> dict[str, str]:
        dirs = {k: self.home / k.lower() for k in ("JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR",
                                                   "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR")}
        for d in [self.root, *dirs.values()]:
            d.mkdir(parents=True, exist_ok=True)
        settings = dirs["JUPYTERLAB_SETTINGS_DIR"] / "@jupyterlab"
        notif = settings / "apputils-extension" / "notification.jupyterlab-settings"
        notif.parent.mkdir(parents=True)
        notif.write_text(json.dumps(NOTIFICATIONS))
        tracker = settings / "notebook-extension" / "tracker.jupyterlab-settings"
        tracker.parent.mkdir(parents=True)
        tracker.write_text(json.dumps({"windowingMode": "none"}))  # every cell's output stays in the DOM
        if self.disabled_extensions:  # the private config folder, never the shared sys-prefix one
            page = dirs["JUPYTER_CONFIG_DIR"] / "labconfig" / "page_config.json"
            page.parent.mkdir(parents=True)
            page.write_text(json.dumps({"disabledExtensions": {e: True for e in self.disabled_extensions}}))
        env = {**os.environ, **{k: str(v) for k, v in dirs.items()}}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
        return env

    def start(self, timeout: float = 60.0) -> "LabServer":
        """Launch ``jupyter lab`` (or ``jupyter notebook``) and wait until /api/status and its page answer 200."""
        module, config, page, _ = APPS[self.app]
        cmd = [sys.executable, "-m", module, "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
               f"--ServerApp.root_dir={self.root}", f"--{config}.expose_app_in_browser=True",
               "--ServerApp.allow_root=True"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=self._env(), stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter {self.app} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self._ok("/api/status") and self._ok(page):
                return self
            time.sleep(0.25)
        raise RuntimeError(f"jupyter {self.app} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def notebook_url(self, name: str) -> str:
        """The page that opens notebook ``name`` in this front end."""
        return f"{self.url}{APPS[self.app][3]}{name}"

    def request(self, path: str, method: str = "GET", timeout: float = 5.0) -> bytes:
        req = urllib.request.Request(self.url + path, method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read()

    def _ok(self, path: str) -> bool:
        try:
            self.request(path)
            return True
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def write_notebook(self, name: str, nb) -> str:
        import nbformat

        nbformat.write(nb, self.root / name)
        return name

    def delete_sessions(self) -> None:
        """Shut down every kernel session this server runs."""
        for s in json.loads(self.request("/api/sessions")):
            self.request(f"/api/sessions/{s['id']}", method="DELETE", timeout=15)

    def _children(self) -> list:
        import psutil

        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return []

    def stop(self) -> None:
        """POST /api/shutdown, wait on our own process id and its kernels' ids, kill any that linger."""
        import psutil

        kids = self._children() if self.proc is not None else []
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.request("/api/shutdown", method="POST")
            except (urllib.error.URLError, OSError):
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        _, alive = psutil.wait_procs(kids, timeout=10)  # kernels run in sessions of their own
        for p in alive:
            p.kill()
        psutil.wait_procs(alive, timeout=5)
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture
def lab_server() -> Iterator:
    """Factory: ``lab_server(disabled_extensions=(), app="lab")`` starts a server; all are stopped at teardown."""
    servers: list[LabServer] = []

    def start(disabled_extensions: tuple[str, ...] = (), app: str = "lab") -> LabServer:
        servers.append(LabServer(disabled_extensions, app))
        return servers[-1].start()

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright (never ``playwright install``)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian chromium (apt-get install -y chromium) or run scripts/e2e.sh")
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


@pytest.fixture
def screenshots(request) -> Path:
    """Folder for this test's screenshots: tests/e2e/screenshots/<test name>/ (git-ignored)."""
    folder = SCREENSHOTS / request.node.name.replace("[", "_").replace("]", "")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder
