"""The systemd units in deploy/systemd: `systemd-analyze verify` finds nothing, `systemd-analyze
security --offline=yes` stays within the exposure targets (the daemon units with and without the
network drop-in, the web dashboard's unit), the settings the daemon, CUDA and ffmpeg depend on stay in
place in the daemon units, and the dashboard's unit runs `i2v-watcher web` as the daemon's user, on the
daemon's config, with the network it listens on and no GPU. Also deploy/config.toml and the
environment file example name only real settings.

No unit is started here (PID 1 need not be systemd): systemd-analyze reads the unit files offline."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from conftest import REPO
from i2v_watcher.config.settings import Settings, load_settings
from i2v_watcher.job.spec import WORKER_ID_PATTERN

DEPLOY = REPO / "deploy"
UNIT_DIR = DEPLOY / "systemd"
UNITS = sorted(UNIT_DIR.glob("*.service"))
WEB_UNIT = UNIT_DIR / "i2v-watcher-web.service"
# The GPU daemons (`i2v-watcher run`); every other check of a daemon setting applies to these alone.
DAEMON_UNITS = [path for path in UNITS if path != WEB_UNIT]
NETWORK_DROP_IN = UNIT_DIR / "i2v-watcher.service.d" / "network.conf"
CONFIG = DEPLOY / "config.toml"
ENV_FILE = UNIT_DIR / "i2v-watcher.env"
EXECUTABLE = "/opt/i2v-watcher/.venv/bin/i2v-watcher"
CONFIG_PATH = "/etc/i2v-watcher/config.toml"
INSTANCE = "3"  # the template is checked as i2v-watcher@3: a GPU other than the single unit's 0
# The exposure targets: a daemon unit without a network port, one with the network drop-in, and the
# web dashboard's unit (it listens on TCP; no GPU, so PrivateDevices=, MemoryDenyWriteExecute= and
# PrivateUsers= are on).
TARGET = {"closed": 0.8, "network": 1.5, "web": 1.0}
# The distribution's own units (sysinit.target, multi-user.target, ...), which the default
# dependencies need. Not /etc/systemd/system or /run/systemd: an admin's drop-ins on this machine
# must not change what is checked.
SYSTEM_UNIT_DIRS = ["/usr/lib/systemd/system", "/lib/systemd/system"]
GPU_CONTROL_NODES = {"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"}
# What the daemon and ffmpeg call (fsutil, lease, postprocess, perms) and what threads, mmap'ed
# weights and the exec of ffmpeg need: each must pass SystemCallFilter=.
NEEDED_SYSCALLS = {"renameat2", "linkat", "link", "flock", "prctl", "execve", "clone", "clone3",
                   "mmap", "mprotect", "madvise", "ioctl", "fchown", "fchmod", "fsync", "openat",
                   "socket", "sendmsg", "get_mempolicy", "sched_getaffinity"}
# What the dashboard calls: a TCP server (uvicorn, asyncio), the submit and retry writes into the inbox
# (fsutil: renameat2, or link + unlink on NFS; fsync; utime), thumbnails and the journal.
WEB_NEEDED_SYSCALLS = {"socket", "bind", "listen", "accept4", "setsockopt", "getsockname", "getpeername",
                       "socketpair", "sendto", "recvfrom", "sendmsg", "epoll_create1", "epoll_ctl",
                       "epoll_wait", "renameat2", "rename", "linkat", "link", "unlink", "unlinkat", "mkdir",
                       "rmdir", "fsync", "utimensat", "openat", "getdents64", "mmap", "mprotect", "clone3",
                       "getrandom", "prlimit64", "sched_getaffinity"}
# Groups no part of which may pass (@privileged may not either, but for @chown: fchown for output_group).
DANGEROUS_GROUPS = ("@mount", "@module", "@reboot", "@swap", "@raw-io", "@debug", "@clock", "@cpu-emulation",
                    "@obsolete", "@resources")
TRUE = {"yes", "true", "on", "1"}


def analyze_binary() -> str:
    found = shutil.which("systemd-analyze") or (
        "/usr/bin/systemd-analyze" if os.access("/usr/bin/systemd-analyze", os.X_OK) else None)
    if found is None:
        pytest.fail("systemd-analyze is missing: run tests/setup.sh (it installs Debian's systemd package, "
                    "which has it)")
    return found


def analyze(*args: str, unit_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C.UTF-8"}
    if unit_path is not None:
        env["SYSTEMD_UNIT_PATH"] = ":".join([str(unit_path), *SYSTEM_UNIT_DIRS])
    return subprocess.run([analyze_binary(), *args, "--no-pager"], capture_output=True, text=True,
                          env=env, timeout=60)


# ------------------------------------------------------------------------------------------------
# A unit file as systemd reads it: section -> key -> values, in order
# ------------------------------------------------------------------------------------------------

def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Every assignment is kept (DeviceAllow=, Environment=, SystemCallFilter= repeat); an empty
    assignment clears the values before it, as it does for systemd's list settings."""
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] | None = None
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):  # continued on the next line
            logical += line[:-1] + " "
            continue
        line, logical = logical + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = sections.setdefault(line[1:-1], {})
            continue
        assert section is not None and "=" in line, f"not a unit file line: {raw!r}"
        key, _, value = line.partition("=")
        values = section.setdefault(key.strip(), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()
    return sections


@dataclass(frozen=True)
class Unit:
    path: Path
    sections: dict[str, dict[str, list[str]]]

    @property
    def template(self) -> bool:
        return self.path.name.endswith("@.service")

    @property
    def name(self) -> str:
        """The unit systemd-analyze is given: the template needs an instance."""
        return self.path.name.replace("@.", f"@{INSTANCE}.") if self.template else self.path.name

    def values(self, key: str, section: str = "Service") -> list[str]:
        return self.sections.get(section, {}).get(key, [])

    def last(self, key: str, section: str = "Service") -> str | None:
        values = self.values(key, section)
        return values[-1] if values else None

    def environment(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for line in self.values("Environment"):
            for word in shlex.split(line):
                name, _, value = word.partition("=")
                env[name] = value
        return env


def load_unit(path: Path) -> Unit:
    return Unit(path, parse_unit(path.read_text()))


def seconds(span: str) -> float:
    """A systemd time span such as 90, 90s, 2min, 1h 30min."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span):
        total += float(number) * units[unit]
    return total


@pytest.fixture(params=DAEMON_UNITS, ids=lambda path: path.name)
def unit(request: pytest.FixtureRequest) -> Unit:
    """Each daemon unit (the single one and the template), not the dashboard's."""
    return load_unit(request.param)


@pytest.fixture
def web() -> Unit:
    return load_unit(WEB_UNIT)


def test_the_units_are_shipped() -> None:
    assert {p.name for p in DAEMON_UNITS} == {"i2v-watcher.service", "i2v-watcher@.service"}
    assert {p.name for p in UNITS} == {p.name for p in DAEMON_UNITS} | {"i2v-watcher-web.service"}
    assert NETWORK_DROP_IN.is_file()


# ------------------------------------------------------------------------------------------------
# systemd-analyze verify and security, on a staged copy
# ------------------------------------------------------------------------------------------------

Stage = Callable[[Unit, bool], Path]  # a unit, with the network drop-in or not -> its folder


@pytest.fixture
def stage(tmp_path: Path) -> Stage:
    """Copies a unit into a unit folder of its own, with the network drop-in beside it when asked.
    The one change: ExecStart's executable, which exists only on a server, becomes a stub script here
    (verify fails on a missing executable; that is the test machine, not the unit)."""
    stub = tmp_path / "i2v-watcher"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)

    def staged(unit: Unit, network: bool) -> Path:
        folder = tmp_path / ("network" if network else "closed") / unit.path.stem
        folder.mkdir(parents=True)
        text = unit.path.read_text()
        assert re.search(rf"^ExecStart={re.escape(EXECUTABLE)} ", text, re.MULTILINE), \
            f"ExecStart of {unit.path.name} no longer starts with {EXECUTABLE}"
        text = re.sub(rf"^ExecStart={re.escape(EXECUTABLE)} ", f"ExecStart={stub} ", text, flags=re.MULTILINE)
        (folder / unit.path.name).write_text(text)
        if network:
            drop_ins = folder / f"{unit.path.name}.d"
            drop_ins.mkdir()
            shutil.copy(NETWORK_DROP_IN, drop_ins / NETWORK_DROP_IN.name)
        return folder

    return staged


def machine_only(line: str, folder: Path) -> bool:
    """Messages about the test machine, not about our unit: systemd-analyze also loads the units ours
    names (remote-fs.target, multi-user.target, nvidia-persistenced.service where it is installed) and
    reports what it dislikes in those files. Any message about our files or our unit counts."""
    ours = str(folder) in line or line.startswith("i2v-watcher") or "i2v-watcher" in line.split(":", 1)[0]
    return not ours


def verify_and_score(unit: Unit, folder: Path, kind: str) -> str:
    """verify finds nothing about our unit, and security's exposure is within TARGET[kind]; security's
    report."""
    verify = analyze("verify", unit.name, unit_path=folder)
    problems = [line for line in (verify.stdout + verify.stderr).splitlines()
                if line.strip() and not machine_only(line, folder)]
    # verify exits 0 on an unknown key or a value it cannot parse ("ignoring"): any message counts.
    assert verify.returncode == 0 and not problems, "\n".join(problems) or verify.stderr

    security = analyze("security", "--offline=yes", unit.name, unit_path=folder)
    assert security.returncode == 0, security.stderr
    problems = [line for line in security.stderr.splitlines()
                if line.strip() and not machine_only(line, folder)]
    assert not problems, "\n".join(problems)
    found = re.search(rf"Overall exposure level for {re.escape(unit.name)}: (\d+\.\d+)", security.stdout)
    assert found, security.stdout[-2000:]
    exposure = float(found.group(1))
    print(f"{unit.name} ({kind}): exposure {exposure}")
    failing = "\n".join(line for line in security.stdout.splitlines() if line.startswith("✗"))
    assert exposure <= TARGET[kind], \
        f"{unit.name} with {kind}: exposure {exposure} > {TARGET[kind]}\n{failing}"
    return security.stdout


@pytest.mark.parametrize("network", [False, True], ids=["closed", "network"])
def test_verify_and_exposure(unit: Unit, network: bool, stage: Stage) -> None:
    report = verify_and_score(unit, stage(unit, network), "network" if network else "closed")
    if unit.template:  # %i expanded: this instance's GPU, no other
        device_line = next(line for line in report.splitlines() if "DeviceAllow=" in line)
        gpus = set(re.findall(r"/dev/nvidia\d+", device_line))
        assert gpus == {f"/dev/nvidia{INSTANCE}"}, device_line


# ------------------------------------------------------------------------------------------------
# What the daemon and the GPU depend on
# ------------------------------------------------------------------------------------------------

def test_notify_watchdog_and_stop(unit: Unit) -> None:
    assert unit.last("Type") == "notify"
    assert unit.last("NotifyAccess") == "main"  # READY/WATCHDOG from the daemon, never from ffmpeg
    watchdog = seconds(unit.last("WatchdogSec") or "0")
    assert watchdog >= 10, "WatchdogSec= must be set (the daemon pings every WatchdogSec/2)"
    assert seconds(unit.last("TimeoutStartSec") or "0") >= 60
    assert unit.last("KillMode") == "mixed"  # SIGTERM to the daemon alone, not to ffmpeg
    stop_timeout = Settings.model_fields["stop_timeout_s"].default
    assert seconds(unit.last("TimeoutStopSec") or "0") > stop_timeout
    # A watchdog kill (SIGABRT) and a crash are restarted; a restart loop is bounded.
    assert unit.last("Restart") in ("on-failure", "on-abnormal", "on-watchdog", "always")
    assert unit.last("RestartSec")
    assert unit.last("StartLimitBurst", "Unit") and unit.last("StartLimitIntervalSec", "Unit")
    assert unit.environment().get("PYTHONFAULTHANDLER") == "1"  # the stacks of a watchdog kill


def test_daemons_start_after_time_sync_without_pulling_it_in(unit: Unit) -> None:
    """Ordered after time-sync.target (retention, the log's times); only a time daemon pulls it in."""
    assert "time-sync.target" in " ".join(unit.values("After", "Unit")).split()
    assert "time-sync.target" not in " ".join(unit.values("Wants", "Unit") + unit.values("Requires", "Unit"))


@pytest.mark.parametrize("path", UNITS, ids=lambda path: path.name)
def test_every_unit_bounds_its_descriptors(path: Path) -> None:
    """An explicit LimitNOFILE= (soft and hard): above systemd's default soft 1024, far below the
    host's file table, so that a flood of connections ends in EMFILE for that unit alone."""
    limit = load_unit(path).last("LimitNOFILE")
    assert limit is not None, f"{path.name} sets no LimitNOFILE="
    soft, _, hard = limit.partition(":")
    assert 1024 < int(soft) <= int(hard or soft) <= 65536, limit


def test_runs_the_daemon_with_the_server_config(unit: Unit) -> None:
    exec_start = unit.values("ExecStart")
    assert len(exec_start) == 1
    words = shlex.split(exec_start[0])
    assert words[:2] == [EXECUTABLE, "run"]
    assert words[words.index("--config") + 1] == CONFIG_PATH
    assert "-/etc/i2v-watcher/i2v-watcher.env" in unit.values("EnvironmentFile")
    assert unit.last("User") == "i2v" and unit.last("Group") == "i2v"
    assert (unit.last("DynamicUser") or "no") not in TRUE  # no stable UID for files on NFS


def test_no_setting_that_breaks_gpu_work(unit: Unit) -> None:
    assert (unit.last("PrivateDevices") or "no") not in TRUE  # hides /dev/nvidia*
    assert unit.last("ProcSubset") != "pid"  # hides /proc/driver/nvidia: CUDA error 304
    assert (unit.last("MemoryDenyWriteExecute") or "no") not in TRUE  # oneDNN, Triton JIT
    assert (unit.last("PrivateUsers") or "no") not in TRUE  # fchown to output_group: EINVAL
    assert unit.last("SystemCallErrorNumber") == "EPERM"  # a blocked call fails, never SIGSYS


def test_devices_are_the_nvidia_nodes_of_one_gpu(unit: Unit) -> None:
    assert unit.last("DevicePolicy") == "closed"
    allowed = {line.split()[0] for line in unit.values("DeviceAllow")}
    own_gpu = "/dev/nvidia%i" if unit.template else "/dev/nvidia0"
    assert allowed == GPU_CONTROL_NODES | {own_gpu}
    env = unit.environment()
    assert env.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID"  # the index is nvidia-smi's
    assert env.get("CUDA_VISIBLE_DEVICES") == ("%i" if unit.template else "0")


def test_template_instances_get_their_gpu_and_worker_id(monkeypatch: pytest.MonkeyPatch) -> None:
    template = load_unit(UNIT_DIR / "i2v-watcher@.service")
    env = template.environment()
    assert env["I2V_DIFFUSION__DEVICE"] == "cuda:0"  # the one GPU the instance sees
    assert "%i" in env["I2V_WORKER_ID"]
    for host, instance in [("gpu01", "0"), ("render-node-17.lab.example.com", "15")]:
        worker_id = env["I2V_WORKER_ID"].replace("%H", host).replace("%i", instance)
        assert re.fullmatch(WORKER_ID_PATTERN, worker_id), worker_id
    # The daemon's own settings, with that environment over deploy/config.toml.
    for name in list(os.environ):
        if name.startswith("I2V_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("I2V_DIFFUSION__DEVICE", env["I2V_DIFFUSION__DEVICE"])
    monkeypatch.setenv("I2V_WORKER_ID", env["I2V_WORKER_ID"].replace("%H", "gpu01").replace("%i", "3"))
    settings = load_settings(CONFIG)
    assert settings.worker_id == "gpu01-gpu3"
    assert settings.diffusion.device == "cuda:0"
    assert settings.diffusion.local_files_only  # the rest of [diffusion] still from the file


def test_system_call_filter_lets_the_daemon_work(unit: Unit) -> None:
    groups = syscall_groups()
    allowed = allowed_syscalls(unit, groups)
    assert not NEEDED_SYSCALLS - allowed, f"blocked: {sorted(NEEDED_SYSCALLS - allowed)}"
    for dangerous in DANGEROUS_GROUPS:
        assert not expand(dangerous, groups) & allowed, dangerous


def allowed_syscalls(unit: Unit, groups: dict[str, list[str]]) -> set[str]:
    """The filter as systemd builds it: the first entry is an allow list, later `~` entries take groups
    out of it, later plain entries put them back."""
    allowed: set[str] = set()
    for line in unit.values("SystemCallFilter"):
        deny = line.startswith("~")
        names = set().union(*(expand(word, groups) for word in line.lstrip("~").split()))
        allowed = allowed - names if deny else allowed | names
    return allowed


def syscall_groups() -> dict[str, list[str]]:
    listing = analyze("syscall-filter")
    assert listing.returncode == 0, listing.stderr
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in listing.stdout.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.split()[0], [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    assert "@system-service" in groups, listing.stdout[:500]
    return groups


def expand(name: str, groups: dict[str, list[str]]) -> set[str]:
    if not name.startswith("@"):
        return {name}
    return set().union(*(expand(member, groups) for member in groups[name]))


def words(unit: Unit, key: str) -> list[str]:
    return [word for line in unit.values(key) for word in line.split()]


def writable(unit: Unit) -> list[PurePosixPath]:
    assert unit.last("ProtectSystem") == "strict"  # everything else is read-only
    roots = [PurePosixPath(p.lstrip("-")) for p in words(unit, "ReadWritePaths")]
    roots += [PurePosixPath("/var/cache") / d for d in words(unit, "CacheDirectory")]
    roots += [PurePosixPath("/var/lib") / d for d in words(unit, "StateDirectory")]
    return roots


def covered(path: str | Path, roots: list[PurePosixPath]) -> bool:
    return any(PurePosixPath(path).is_relative_to(root) for root in roots)


def test_writable_paths_cover_the_data_folders_and_the_model_cache(unit: Unit) -> None:
    roots = writable(unit)
    settings = load_settings(CONFIG)
    for name, folder in settings.folders().items():
        assert covered(folder, roots), f"{name} = {folder} is read-only for the unit"
    assert covered(unit.environment()["HF_HOME"], roots)


def test_network_drop_in_opens_only_the_network() -> None:
    sections = parse_unit(NETWORK_DROP_IN.read_text())
    service = sections["Service"]
    assert service["PrivateNetwork"] == ["no"]
    assert set(" ".join(service["RestrictAddressFamilies"]).split()) == {"AF_INET", "AF_INET6"}
    assert service["IPAddressAllow"] == ["localhost"]  # the units keep IPAddressDeny=any
    assert set(service) == {"PrivateNetwork", "RestrictAddressFamilies", "IPAddressAllow"}
    for unit_path in DAEMON_UNITS:
        assert load_unit(unit_path).values("IPAddressDeny") == ["any"]


# ------------------------------------------------------------------------------------------------
# The web dashboard's unit: `i2v-watcher web`, the daemon's user and config, TCP, no GPU
# ------------------------------------------------------------------------------------------------

def test_web_verify_and_exposure(web: Unit, stage: Stage) -> None:
    verify_and_score(web, stage(web, False), "web")


def test_web_runs_the_dashboard_as_the_daemon_with_its_config(web: Unit) -> None:
    exec_start = web.values("ExecStart")
    assert len(exec_start) == 1
    command = shlex.split(exec_start[0])
    assert command[:2] == [EXECUTABLE, "web"]
    config = command[command.index("--config") + 1]
    assert config == CONFIG_PATH
    for daemon in map(load_unit, DAEMON_UNITS):  # the same config, hence the same folders
        daemon_command = shlex.split(daemon.values("ExecStart")[0])
        assert config == daemon_command[daemon_command.index("--config") + 1], daemon.path.name
        # The same owner and group for what it puts in the inbox as for the daemon's own files.
        assert (web.last("User"), web.last("Group")) == (daemon.last("User"), daemon.last("Group")), \
            daemon.path.name
    assert (web.last("DynamicUser") or "no") not in TRUE
    # The token; not the daemons' environment file, which may hold the broker's password.
    assert web.values("EnvironmentFile") == ["-/etc/i2v-watcher/web.env"]


def test_web_keeps_its_catalog_in_a_local_cache_of_its_own(web: Unit) -> None:
    """The catalog's index (catalog.index.default_path: $CACHE_DIRECTORY) needs a writable local folder
    under ProtectSystem=strict and ProtectHome=yes, not the daemons' model cache."""
    assert web.last("ProtectSystem") == "strict" and web.last("ProtectHome") in TRUE
    assert web.values("CacheDirectory") == ["i2v-watcher-web"]
    daemons = {value for unit in map(load_unit, DAEMON_UNITS) for value in unit.values("CacheDirectory")}
    assert "i2v-watcher-web" not in daemons


def test_web_is_a_plain_service(web: Unit) -> None:
    """uvicorn sends no READY=1 and no WATCHDOG=1: notify or a watchdog would kill a healthy dashboard."""
    assert web.last("Type") in ("simple", "exec")
    assert web.last("WatchdogSec") is None and web.last("NotifyAccess") is None
    assert web.last("Restart") == "on-failure" and web.last("RestartSec")
    assert web.last("StartLimitBurst", "Unit") and web.last("StartLimitIntervalSec", "Unit")
    assert web.last("TimeoutStopSec")


def test_web_has_no_gpu(web: Unit) -> None:
    assert not [line for line in web.values("DeviceAllow") if "/dev/nvidia" in line]
    assert web.last("PrivateDevices") in TRUE and web.last("DevicePolicy") == "closed"
    assert not {"CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "HF_HOME"} & set(web.environment())
    assert "nvidia" not in " ".join(web.values("After", "Unit") + web.values("Wants", "Unit"))
    # No torch, no JIT in the dashboard: what the daemon units must leave off is on here.
    assert web.last("MemoryDenyWriteExecute") in TRUE
    assert web.last("NoNewPrivileges") in TRUE and web.values("CapabilityBoundingSet") == []


def test_web_memory_has_a_ceiling_that_fits_its_decodes(web: Unit) -> None:
    """Two full-size decodes at the default pixel limit (about 8 bytes a pixel each) and the process."""
    ceiling = web.last("MemoryMax")
    assert ceiling is not None and ceiling.endswith("M"), ceiling
    pixels = Settings.model_fields["max_image_pixels"].default
    assert int(ceiling[:-1]) * 2**20 >= 2 * 8 * pixels + 256 * 2**20


def test_web_listens_on_tcp(web: Unit) -> None:
    families = set(" ".join(web.values("RestrictAddressFamilies")).split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}  # the journal, then IPv4 and IPv6 clients
    assert (web.last("PrivateNetwork") or "no") not in TRUE
    # Only localhost may connect, which is where web_listen listens unless the admin changes both.
    assert web.values("IPAddressDeny") == ["any"] and web.values("IPAddressAllow") == ["localhost"]
    assert Settings.model_fields["web_listen"].default.startswith("127.0.0.1:")


def test_web_writes_only_the_data_folders(web: Unit) -> None:
    roots = writable(web)
    for name, folder in load_settings(CONFIG).folders().items():
        assert covered(folder, roots), f"{name} = {folder} is read-only for the dashboard (submit, retry)"
    assert not web.values("StateDirectory")  # no state; its one cache: the catalog (test above)
    assert web.last("PrivateTmp") in TRUE  # uploads are checked in a private /tmp


def test_web_system_call_filter(web: Unit) -> None:
    groups = syscall_groups()
    allowed = allowed_syscalls(web, groups)
    assert not WEB_NEEDED_SYSCALLS - allowed, f"blocked: {sorted(WEB_NEEDED_SYSCALLS - allowed)}"
    for dangerous in (*DANGEROUS_GROUPS, "@privileged"):  # @chown too: it never gives a file a group
        assert not expand(dangerous, groups) & allowed, dangerous
    assert web.last("SystemCallErrorNumber") == "EPERM"  # a blocked call fails, never SIGSYS


# ------------------------------------------------------------------------------------------------
# deploy/config.toml and the environment file example
# ------------------------------------------------------------------------------------------------

def test_server_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("I2V_"):
            monkeypatch.delenv(name)
    settings = load_settings(CONFIG)  # the folders need not exist to validate
    assert not settings.create_inbox
    assert all(folder.is_absolute() and PurePosixPath(folder).is_relative_to("/srv/i2v")
               for folder in settings.folders().values())
    for unit_path in DAEMON_UNITS:
        assert settings.stop_timeout_s < seconds(load_unit(unit_path).last("TimeoutStopSec") or "0")


def test_server_config_examples_are_real_settings() -> None:
    """Every commented-out example (`# key = value`) still loads once uncommented."""
    text = CONFIG.read_text()
    data = tomllib.loads(text)
    examples = re.findall(r"^# ?([a-z_]+ = .+)$", text, re.MULTILINE)
    assert examples
    for example in examples:
        key = example.split(" = ")[0]
        assert key in Settings.model_fields, example
        if key == "output_group":  # a group name must exist on this host: take one that does
            continue
        Settings(**{**data, **tomllib.loads(example)})


def test_environment_file_example_names_real_settings() -> None:
    lines = [line.lstrip("#") for line in ENV_FILE.read_text().splitlines()
             if re.match(r"^#?[A-Z][A-Z0-9_]*=", line)]
    assert lines
    for line in lines:
        name, _, _ = line.partition("=")
        if not name.startswith("I2V_"):
            assert name in ("HF_HOME",), line
            continue
        field, _, nested = name.removeprefix("I2V_").lower().partition("__")
        assert field in Settings.model_fields, line
        if nested:
            table = getattr(Settings.model_fields[field].annotation, "model_fields", {})
            assert nested in table, line
