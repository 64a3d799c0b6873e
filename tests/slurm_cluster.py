"""A throw-away single-node SLURM cluster on this machine, for the cluster test.

Installs Debian's slurm-wlm and munge when they are missing, writes slurm.conf (and gres.conf)
where the job-step plugin looks for them (/etc/slurm; previous files are put back afterwards), keeps
state, spool and logs in a scratch folder, and stops every daemon it started by its pid.
No accounting storage: jobs are followed with squeue and scontrol, so MinJobAge is kept long.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import debian

SLURM_CONF = Path("/etc/slurm/slurm.conf")
GRES_CONF = Path("/etc/slurm/gres.conf")
COMMANDS = ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "sinfo")


ClusterUnavailable = debian.Unavailable


def _run(*cmd, check=True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, **kw)


def ensure_installed() -> None:
    debian.ensure(["slurm-wlm", "munge"], list(COMMANDS))


def _cpus_and_memory() -> tuple[int, int]:
    r = _run("slurmd", "-C")  # what slurmd detects: "NodeName=... CPUs=2 ... RealMemory=..."
    fields = dict(f.split("=", 1) for f in r.stdout.split() if "=" in f)
    return int(fields["CPUs"]), int(fields["RealMemory"]) - 1024


class SingleNodeCluster:
    """One node in every partition of `partitions` (the first is the default). With `gpus`, the
    node declares that many GPUs as a generic resource: SLURM schedules them (a job asking for
    more waits) though no device exists, which is all a test of the requests needs."""

    def __init__(self, scratch: Path, partitions: tuple[str, ...], gpus: int = 0):
        self.scratch, self.partitions, self.gpus = Path(scratch), tuple(partitions), gpus
        self.node = socket.gethostname().split(".")[0]
        self.daemons: list[subprocess.Popen] = []
        self.munged_pid: int | None = None
        self.saved: dict[Path, bytes | None] = {}
        self.ctld_log = self.scratch / "slurmctld.log"

    def __enter__(self) -> "SingleNodeCluster":
        ensure_installed()
        try:
            self._start_munge()
            self._write_conf()
            env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
            self.daemons.append(
                subprocess.Popen(
                    [shutil.which("slurmctld") or "/usr/sbin/slurmctld", "-D", "-c"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            self.daemons.append(
                subprocess.Popen(
                    [shutil.which("slurmd") or "/usr/sbin/slurmd", "-D"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            self._wait_idle()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start_munge(self) -> None:
        if _run("bash", "-c", "munge -n | unmunge", check=False).returncode == 0:
            return  # this machine's munged already runs; it is not ours to stop
        for d in ("/run/munge", "/var/log/munge", "/var/lib/munge", "/etc/munge"):
            Path(d).mkdir(parents=True, exist_ok=True)
            shutil.chown(d, "munge", "munge")
        if not Path("/etc/munge/munge.key").exists():
            _run("runuser", "-u", "munge", "--", "mungekey", "--create")
        pidfile = Path("/run/munge/munged.pid")  # munged runs as munge: a folder it may write to
        pidfile.unlink(missing_ok=True)
        _run(
            "runuser",
            "-u",
            "munge",
            "--",
            shutil.which("munged") or "/usr/sbin/munged",
            f"--pid-file={pidfile}",
        )
        for _ in range(50):
            if pidfile.exists() and pidfile.read_text().strip():
                self.munged_pid = int(pidfile.read_text())
                return
            time.sleep(0.1)
        raise RuntimeError("munged did not start")

    def _write_conf(self) -> None:
        cpus, memory = _cpus_and_memory()
        gres = f" Gres=gpu:{self.gpus}" if self.gpus else ""
        partitions = "\n".join(
            f"PartitionName={name} Nodes=ALL Default={'YES' if i == 0 else 'NO'} "
            "MaxTime=INFINITE State=UP"
            for i, name in enumerate(self.partitions)
        )
        for d in ("state", "spool"):
            (self.scratch / d).mkdir(parents=True, exist_ok=True)
        conf = f"""ClusterName=oodrepro-test
SlurmctldHost={self.node}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=3600
ReturnToService=2
StateSaveLocation={self.scratch / "state"}
SlurmdSpoolDir={self.scratch / "spool"}
SlurmctldPidFile={self.scratch / "slurmctld.pid"}
SlurmdPidFile={self.scratch / "slurmd.pid"}
SlurmctldLogFile={self.ctld_log}
SlurmdLogFile={self.scratch / "slurmd.log"}
{"GresTypes=gpu" if self.gpus else ""}
NodeName={self.node} CPUs={cpus} RealMemory={memory} State=UNKNOWN{gres}
{partitions}
"""
        self._write(SLURM_CONF, conf)
        if self.gpus:  # stand-in device files: counts SLURM schedules, with no device behind them
            files = [self.scratch / f"nvidia{i}" for i in range(self.gpus)]
            for f in files:
                f.touch()
            self._write(
                GRES_CONF,
                "".join(f"NodeName={self.node} Name=gpu File={f}\n" for f in files),
            )

    def _write(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.saved[path] = path.read_bytes() if path.exists() else None
        path.write_text(text)

    def _wait_idle(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = _run("sinfo", "-h", "-o", "%T", check=False)
            if r.returncode == 0 and set(r.stdout.split()) == {"idle"}:
                return
            time.sleep(0.5)
        raise RuntimeError(f"the node did not become idle: {_run('sinfo', check=False).stdout}")

    def allocations(self) -> list[str]:
        """Job ids the controller started, from its log: by the main scheduler ("sched: Allocate
        JobId=N") or by backfill ("backfill: Started JobId=N")."""
        text = self.ctld_log.read_text() if self.ctld_log.exists() else ""
        return re.findall(r"(?:Allocate|Started) JobId=(\d+)", text)

    def __exit__(self, *exc) -> None:
        for name in self.partitions:
            _run("scancel", "--partition", name, check=False)
        for proc in reversed(self.daemons):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.munged_pid is not None:
            try:
                os.kill(self.munged_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for path, before in self.saved.items():
            if before is not None:
                path.write_bytes(before)
            else:
                path.unlink(missing_ok=True)
