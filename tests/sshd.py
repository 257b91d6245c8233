"""A real OpenSSH server on loopback, started as the current user, standing in for the Pi.

Throwaway host and client keys in a temporary folder; key login only; the client side gets
an ``ssh_config`` (known hosts in the same folder) so nothing in ``~/.ssh`` is read or written.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_reason() -> str | None:
    """Why a loopback sshd cannot run here (None when it can)."""
    if not SSHD.is_file():
        return f"OpenSSH server not installed ({SSHD} missing; apt-get install openssh-server)"
    for tool in ("ssh", "scp", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install openssh-client)"
    return None


@dataclass
class LoopbackSSHD:
    folder: Path
    port: int
    user: str
    process: subprocess.Popen[bytes]

    @property
    def destination(self) -> str:
        return f"{self.user}@127.0.0.1"

    @property
    def client_key(self) -> Path:
        return self.folder / "client_ed25519"

    @property
    def client_config(self) -> Path:
        return self.folder / "ssh_config"

    def flash_args(self) -> list[str]:
        """The connection options of ``wakeguard flash`` for this server."""
        return [
            self.destination,
            "--port",
            str(self.port),
            "--identity",
            str(self.client_key),
            "--ssh-config",
            str(self.client_config),
        ]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def start_sshd(folder: Path, timeout: float = 20.0) -> LoopbackSSHD:
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    host_key = folder / "host_ed25519"
    client_key = folder / "client_ed25519"
    _keygen(host_key)
    _keygen(client_key)
    (folder / "authorized_keys").write_text((folder / "client_ed25519.pub").read_text())
    os.chmod(folder / "authorized_keys", 0o600)
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {folder / 'sshd.pid'}",
                f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "StrictModes no",
                "Subsystem sftp internal-sftp",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    (folder / "ssh_config").write_text(
        "\n".join(
            [
                "Host *",
                f"  UserKnownHostsFile {folder / 'known_hosts'}",
                "  GlobalKnownHostsFile /dev/null",
                "  StrictHostKeyChecking accept-new",
                "  LogLevel ERROR",
                "",
            ]
        )
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(
            mode=0o755, exist_ok=True
        )  # privilege separation dir, as the Debian service makes it
    log = open(folder / "sshd.log", "wb")
    proc = subprocess.Popen(
        [str(SSHD), "-D", "-e", "-f", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    server = LoopbackSSHD(folder, port, getpass.getuser(), proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {(folder / 'sshd.log').read_text()[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within {timeout} s")
