"""All settings in one pydantic-settings model: a TOML file, overridden by I2V_* environment variables."""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from i2v_watcher.config.caption import CaptionSettings
from i2v_watcher.config.checks import (
    SettingsConflict,
    check_draft_template,
    check_folders_apart,
    check_output_template,
    check_presets_known,
    check_swap_backends,
    host_name_and_port,
)
from i2v_watcher.config.checks import host_and_port as host_and_port  # re-exported for the web app
from i2v_watcher.config.errors import explain, explain_environment
from i2v_watcher.config.gate import QualityGate
from i2v_watcher.config.models import DEFAULT_MODELS, DiffusionSettings, ModelSettings
from i2v_watcher.config.quality import QualityLevel, with_shipped_levels
from i2v_watcher.errors import StartupError
from i2v_watcher.fs.atomic import NotRegularFile, open_regular
from i2v_watcher.fs.perms import parse_mode, resolve_group
from i2v_watcher.job.spec import WORKER_ID_PATTERN, JobDefaults, RegistryName
from i2v_watcher.steps.presets import DEFAULT_OVERRIDABLE, SHIPPED_PRESETS, Preset

# Files that desktops, NAS boxes and copy/sync tools leave in shared folders; never jobs.
DEFAULT_IGNORE_PATTERNS = [
    ".*",  # hidden files: .DS_Store, ._* AppleDouble twins, rsync/.part temporaries, our own submits
    "~*", "*~", "*.tmp", "*.temp", "*.part", "*.partial", "*.crdownload", "*.download", "*.!sync",
    "*.swp", "*.lock", "thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r",
    "@eadir", "#recycle", "#snapshot", "$recycle.bin", "system volume information", "lost+found",
]
FOLDERS = ("inbox", "outbox", "failed", "done", "work")
HOUR, DAY = 3600.0, 86400.0
GIB = 1024**3


def _default_worker_id() -> str:
    return socket.gethostname().split(".")[0] or "worker"


class Settings(BaseSettings):
    # allow_inf_nan=False: inf or nan in a duration (TOML and the environment both spell them) would
    # crash a timer thread or spin it; every number below also has an upper bound for the same reason.
    model_config = SettingsConfigDict(env_prefix="I2V_", env_nested_delimiter="__", extra="forbid",
                                      allow_inf_nan=False)

    # Folders
    inbox: Path
    outbox: Path
    failed: Path
    done: Path
    work: Path
    # A LOCAL folder for the generated frames' resume copies (not the share: they are large and
    # written for every job). Unset: $CACHE_DIRECTORY/scratch under systemd, else
    # ~/.cache/i2v-watcher/scratch.
    scratch: Path | None = None
    create_inbox: bool = False
    worker_id: str = Field(default_factory=_default_worker_id, pattern=WORKER_ID_PATTERN)

    # What runs
    backend: RegistryName = "preview"
    backends: list[RegistryName] = Field(default_factory=list)
    # Backends loaded on demand, one at a time, in place of each other (work.swap); folder mode only.
    swap_backends: list[RegistryName] = Field(default_factory=list)
    swap_retry_s: float = Field(default=600.0, ge=1, le=DAY)
    auto_backend: RegistryName = "i2vgen-xl"
    plugins: list[str] = Field(default_factory=list)
    models: dict[str, ModelSettings] = Field(default_factory=lambda: dict(DEFAULT_MODELS))
    diffusion: DiffusionSettings = Field(default_factory=DiffusionSettings)
    # An image captioner that writes the prompt of a job that has none (off unless its model is set).
    caption: CaptionSettings = Field(default_factory=CaptionSettings)
    defaults: JobDefaults = Field(default_factory=JobDefaults)
    # What `quality: draft | standard | final` sets, per level and backend (config/quality.py).
    quality: dict[str, QualityLevel] = Field(default_factory=lambda: with_shipped_levels({}))
    # What the judge's scores fail a clip by, and what then happens (config/gate.py).
    quality_gate: QualityGate = Field(default_factory=QualityGate)
    presets: dict[str, Preset] = Field(default_factory=lambda: dict(SHIPPED_PRESETS))
    postprocess_overridable: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_OVERRIDABLE.items()})
    poster_quality: int = Field(default=90, ge=1, le=100)
    ffmpeg_path: Path | None = None
    ffmpeg_stall_s: float = Field(default=60.0, ge=1, le=HOUR)

    # Watching the inbox
    watch_mode: Literal["auto", "inotify", "poll"] = "auto"
    poll_interval_s: float = Field(default=5.0, ge=0.1, le=HOUR)  # below 0.1 s polling burns a core
    rescan_s: float = Field(default=30.0, ge=1, le=DAY)
    settle_s: float = Field(default=2.0, ge=0, le=HOUR)
    sidecar_grace_s: float = Field(default=10.0, ge=0, le=DAY)
    orphan_sidecar_s: float = Field(default=600.0, ge=0, le=30 * DAY)
    ignore_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_IGNORE_PATTERNS))

    # Untrusted input
    max_sidecar_bytes: int = Field(default=64 * 1024, ge=256, le=16 * 1024 * 1024)
    max_image_pixels: int = Field(default=64_000_000, ge=4096, le=1_000_000_000)
    max_image_bytes: int = Field(default=200 * 1024 * 1024, ge=1024, le=10 * GIB)
    # An input with more than one name (a hard link): refused, or read once into a private copy.
    hardlinked_inputs: Literal["refuse", "copy"] = "refuse"
    # Host memory a job's frames may take; None: half of the machine's memory (or its cgroup limit).
    memory_budget_mb: int | None = Field(default=None, ge=64, le=64 * 1024 * 1024)
    # A job in flight when the daemon died this many times in a row goes to failed/ (an OOM kill).
    max_job_crashes: int = Field(default=2, ge=1, le=100)
    # What one job's post-processing may make, checked before generation (media/cost.py).
    max_output_frames: int = Field(default=3600, ge=1, le=10_000_000)
    max_output_duration_s: float = Field(default=600.0, gt=0, le=DAY)
    max_output_pixel_frames: int = Field(default=8_000_000_000, ge=1, le=10**15)
    max_step_buffer_mb: int = Field(default=2048, ge=1, le=64 * 1024 * 1024)
    # Seconds one encode may run before ffmpeg is killed; None: sized from the job's outputs.
    max_encode_s: float | None = Field(default=None, gt=0, le=7 * DAY)

    # Publishing and clean-up
    output_template: str = "{stem}"
    keep_inputs: Literal["done", "outbox", "delete"] = "done"
    # Drafts (`quality: draft`): their outputs' name, and how long an unapproved draft's image is kept.
    draft_name_template: str = "{name}.draft"
    keep_drafts: bool = True
    draft_expiry_days: float = Field(default=14.0, gt=0, le=36500)
    retention_days: float | None = Field(default=None, gt=0, le=36500)
    transient_retries: int = Field(default=5, ge=0, le=100)
    retry_backoff_s: float = Field(default=2.0, ge=0, le=HOUR)
    retry_backoff_max_s: float = Field(default=60.0, ge=0, le=DAY)

    # Many workers on one inbox
    # Seconds a worker's heartbeat counter may stand still before other workers take its jobs over;
    # well above the share's attribute-cache time (NFS actimeo).
    lease_timeout_s: float = Field(default=90.0, ge=2, le=DAY)
    # Seconds a job may go without a progress point before the daemon counts as hung: its heartbeat
    # stops (its jobs can be taken over) and so do systemd's watchdog pings (systemd restarts it).
    max_silent_s: float = Field(default=600.0, ge=1, le=DAY)
    # Seconds a job whose backend no live worker loaded waits in the inbox before a worker fails it
    # with a report (work.routing); 0 waits forever.
    unroutable_timeout_s: float = Field(default=DAY, ge=0, le=365 * DAY)
    # Jobs in flight at once past the claim: 2 lets one generate while the one before is encoded and
    # published; 0 or 1 runs one job at a time.
    pipeline_depth: int = Field(default=2, ge=0, le=8)
    # Seconds one model load may take under systemd (EXTEND_TIMEOUT_USEC before each load).
    load_timeout_s: float = Field(default=1200.0, ge=10, le=DAY)
    # Group (name or number) and permission bits given to published files and the folders made for
    # them, so the whole team can read them; unset: the daemon's own group and umask.
    output_group: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")
    output_mode: str | None = Field(default=None, pattern=r"^0?[0-7]{3}$")
    # "folders": every `run` claims and runs jobs itself, coordinated by renames alone. "celery": `run`
    # only claims jobs into work/queue/ and enqueues their ids on a Redis broker; `worker`s run them.
    coordination: Literal["folders", "celery"] = "folders"
    broker_url: str | None = Field(default=None, pattern=r"^rediss?://", max_length=2048)
    celery_queue: str = Field(default="i2v-watcher", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
    # Seconds a delivered, unacknowledged task waits before the broker hands it to another worker
    # (its worker died): must exceed the longest job.
    visibility_timeout_s: float = Field(default=6 * HOUR, ge=5, le=7 * DAY)

    # The web dashboard (`i2v-watcher web`): where it listens, and what it may change. Read-only unless
    # a write is allowed; every write then needs `web_token` (or I2V_WEB_TOKEN, e.g. from the unit's
    # environment file), at least 16 characters.
    web_listen: str = "127.0.0.1:8080"
    web_allow_submit: bool = False
    web_allow_retry: bool = False
    web_token: SecretStr | None = None
    web_upload_max_mb: int = Field(default=50, ge=1, le=10 * 1024)
    # Open connections at most (at the cap, the one waiting longest for its request is dropped), and
    # seconds a connection has to send a complete request head.
    web_max_connections: int = Field(default=256, ge=8, le=65536)
    web_header_timeout_s: float = Field(default=10.0, ge=0.5, le=HOUR)
    web_page_size: int = Field(default=24, ge=1, le=500)
    # The catalog of published clips that the dashboard reads (catalog.index): a LOCAL SQLite file
    # (never on the share); unset: one per outbox in $CACHE_DIRECTORY or ~/.cache/i2v-watcher. And the
    # seconds between its reconciling walks of the outbox (between them it follows the event logs).
    catalog_path: Path | None = None
    catalog_rescan_s: float = Field(default=600.0, ge=10, le=DAY)
    # The names the dashboard answers to in the Host header (`name`: any port, `name:port`: that one);
    # any other name is refused (DNS rebinding). Empty: web_listen's host and localhost, on its port.
    web_allowed_hosts: list[str] = Field(default_factory=list)
    # Seconds a sign-in lasts; signing out ends that session on the server at once.
    web_session_s: float = Field(default=12 * HOUR, ge=60, le=30 * DAY)
    # Failed sign-ins per client address and minute before 429; the dashboard in all allows ten times.
    web_signin_failures: int = Field(default=5, ge=1, le=1000)
    # Prometheus metrics of this daemon on http://metrics_address:metrics_port/metrics; unset: none
    # (the hardened unit keeps no network port).
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_address: str = "127.0.0.1"

    # Life of the process
    stop_timeout_s: float = Field(default=30.0, ge=0, le=DAY)
    progress_log_s: float = Field(default=5.0, ge=0, le=HOUR)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console", "journal"] = "auto"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs; the environment overrides it.
        return env_settings, init_settings

    @field_validator("inbox", "outbox", "failed", "done", "work", "scratch", "ffmpeg_path", "catalog_path",
                     mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        # Path("") is ".": an empty I2V_INBOX= would silently mean the directory the command runs in.
        if isinstance(value, str) and not value.strip():
            raise ValueError("an empty path (it would mean the current directory); give a path")
        return value

    @field_validator("inbox", "outbox", "failed", "done", "work", "ffmpeg_path", "catalog_path")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Relative paths are taken from the directory the daemon was started in.
        return None if value is None else Path(os.path.abspath(os.path.expanduser(value)))

    @field_validator("presets", mode="before")
    @classmethod
    def _with_shipped_presets(cls, value: Any) -> Any:
        # The config adds presets (or redefines one by name); the shipped ones stay available.
        return {**SHIPPED_PRESETS, **value} if isinstance(value, dict) else value

    @field_validator("quality", mode="before")
    @classmethod
    def _with_shipped_levels(cls, value: Any) -> Any:
        return with_shipped_levels(value)

    @field_validator("models", mode="before")
    @classmethod
    def _with_default_models(cls, value: Any) -> Any:
        return {**DEFAULT_MODELS, **value} if isinstance(value, dict) else value

    @field_validator("web_listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host_and_port(value)
        return value

    @field_validator("web_allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            host_name_and_port(entry)
        return value

    @field_validator("draft_name_template")
    @classmethod
    def _draft_name_template(cls, value: str) -> str:
        return check_draft_template(value)

    @field_validator("output_template")
    @classmethod
    def _template(cls, value: str) -> str:
        return check_output_template(value)

    @field_validator("ignore_patterns")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [pattern.lower() for pattern in value]

    @field_validator("output_group")
    @classmethod
    def _group_known(cls, value: str | None) -> str | None:
        if value is not None:
            resolve_group(value)  # a name unknown on this host is a config error, not a failed publish
        return value

    @field_validator("output_mode")
    @classmethod
    def _mode_usable(cls, value: str | None) -> str | None:
        if value is not None:
            parse_mode(value)
        return value

    @model_validator(mode="after")
    def _presets_known(self) -> Settings:
        check_presets_known(self.defaults.presets, list(self.presets), self.postprocess_overridable)
        return self

    @model_validator(mode="after")
    def _backoff_ordered(self) -> Settings:
        if self.retry_backoff_max_s < self.retry_backoff_s:
            raise SettingsConflict(f"retry_backoff_max_s ({self.retry_backoff_max_s:g}) must be at least "
                                   f"retry_backoff_s ({self.retry_backoff_s:g})", "retry_backoff_max_s",
                                   "retry_backoff_s")
        return self

    @model_validator(mode="after")
    def _celery_complete(self) -> Settings:
        if self.coordination != "celery":
            return self
        if self.broker_url is None:
            raise SettingsConflict('broker_url is required with coordination = "celery" '
                                   '(e.g. broker_url = "redis://queue-host:6379/0")', "coordination")
        if self.visibility_timeout_s <= self.lease_timeout_s:
            raise SettingsConflict(f"visibility_timeout_s ({self.visibility_timeout_s:g}) must exceed "
                                   f"lease_timeout_s ({self.lease_timeout_s:g}), and the longest job",
                                   "visibility_timeout_s", "lease_timeout_s")
        return self

    @model_validator(mode="after")
    def _swap_apart(self) -> Settings:
        check_swap_backends(self.resident, self.swap_backends, self.coordination)
        return self

    @model_validator(mode="after")
    def _folders_apart(self) -> Settings:
        check_folders_apart(self.folders())
        return self

    @property
    def resident(self) -> list[str]:
        """The backends loaded at start-up: a sidecar's `backend` may choose only among these."""
        return list(dict.fromkeys([self.backend, *self.backends]))

    def folders(self) -> dict[str, Path]:
        return {"inbox": self.inbox, "outbox": self.outbox, "failed": self.failed, "done": self.done,
                "work": self.work}

    @property
    def worker_dir(self) -> Path:
        return self.work / self.worker_id

    @property
    def scratch_dir(self) -> Path:
        """This worker's resume copies of generated frames (see `scratch`)."""
        if self.scratch is not None:
            base = self.scratch
        elif os.environ.get("CACHE_DIRECTORY"):  # systemd's CacheDirectory=: local, kept across restarts
            base = Path(os.environ["CACHE_DIRECTORY"].split(":")[0]) / "scratch"
        else:
            base = Path("~/.cache/i2v-watcher/scratch").expanduser()
        return base / self.worker_id


def load_settings(config_file: Path | str | None) -> Settings:
    """Read the TOML file (if any), apply I2V_* overrides, validate. Errors are StartupErrors; an invalid
    value is a ConfigError naming each setting, its value and where it was set."""
    data: dict[str, Any] = {}
    text = ""
    if config_file is not None:
        try:
            with open(config_file, "rb", opener=open_regular) as handle:  # a FIFO would hang
                text = handle.read().decode("utf-8")
            data = tomllib.loads(text)
        except FileNotFoundError as exc:
            raise StartupError(f"config file not found: {config_file}") from exc
        except UnicodeDecodeError as exc:
            raise StartupError(f"cannot read config file {config_file}: not UTF-8 text ({exc.reason} at byte "
                               f"{exc.start})") from exc
        except NotRegularFile as exc:
            raise StartupError(f"cannot read config file {config_file}: {exc.strerror}") from exc
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise StartupError(f"cannot read config file {config_file}: {exc}") from exc
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise explain(Settings, exc, config_file, text) from exc
    except SettingsError as exc:  # an I2V_* table or list variable that is not valid JSON
        raise explain_environment(Settings, exc) from exc
