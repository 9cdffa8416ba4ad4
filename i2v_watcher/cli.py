"""The `i2v-watcher` command: run, worker, submit, status, retry, approve, pause, resume, drain, web,
check-config, doctor."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import types
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from i2v_watcher import __version__, backends
from i2v_watcher.config.errors import config_warnings
from i2v_watcher.config.settings import Settings, load_settings
from i2v_watcher.errors import StartupError
from i2v_watcher.explain.core import did_you_mean
from i2v_watcher.logs import configure

if TYPE_CHECKING:
    from i2v_watcher.service.lifecycle import Service

EXIT_CANNOT_RUN, EXIT_CRASH, EXIT_BROKEN_PIPE = 2, 1, 128 + 13  # 13: SIGPIPE
CONFIG_ENV, DEFAULT_CONFIG = "I2V_CONFIG", Path("/etc/i2v-watcher/config.toml")
CONFIG_HELP = f"the TOML config file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="i2v-watcher", description=__doc__)
    parser.add_argument("--version", action="version", version=f"i2v-watcher {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", "-c", type=Path, metavar="FILE", help=CONFIG_HELP)
        return p

    run = with_config(sub.add_parser("run", help="run the daemon"))
    run.add_argument("--once", action="store_true",
                     help="process what is in the inbox (and arrives meanwhile), then exit: 0 when every "
                          "job was published, 3 when some failed")
    with_config(sub.add_parser("worker", help='process queued jobs (coordination = "celery"): one per GPU'))
    submit = with_config(sub.add_parser("submit", help="drop an image and its sidecar into the inbox"))
    submit.add_argument("image", type=Path)
    submit.add_argument("--prompt", help="the text prompt")
    submit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any sidecar field, e.g. --set num_frames=24 (repeatable)")
    submit.add_argument("--name", help="the job's name in the inbox (default: the image's name)")
    status = with_config(sub.add_parser(
        "status", help="counts and lists of jobs, from the folders",
        description="Queued (images in the inbox), in progress (work/), done (published: the outbox's "
                    "<name>.json, latest last; the text shows the last 10) and failed jobs, and the workers. "
                    "A folder that does not exist is a warning and its count unknown (? in the text, null in "
                    "--json), never a zero. Exit codes: 0; 2 when none of inbox, outbox, failed and work "
                    "exists (a share not mounted, or wrong paths) or the config is invalid."))
    status.add_argument("--json", action="store_true", help="machine-readable output")
    retry = with_config(sub.add_parser(
        "retry", help="move failed jobs back into the inbox",
        description="Prints the moved files on stdout. Exit codes: 0, also when there is nothing to retry "
                    "(said on stderr); 2 for an unknown NAME (the failed jobs are listed) or when a report "
                    "was refused."))
    target = retry.add_mutually_exclusive_group(required=True)
    target.add_argument("name", nargs="?", help="a failed job's name (as `status` lists it)")
    target.add_argument("--all", action="store_true", help="every failed job")
    approve = with_config(sub.add_parser(
        "approve", help="queue the final of a draft (a job published with quality: draft)",
        description="Puts the draft's image back into the inbox with its request, its seed and quality: "
                    "final, once: a second approve, from any door, only says so. Prints the final's image "
                    "on stdout. Exit codes: 0, also when it was approved already (said on stderr); 2 when "
                    "no draft of that name is kept."))
    approve.add_argument("name", help="the draft's job name, as `status` lists it (e.g. team/fox)")
    cancel = with_config(sub.add_parser(
        "cancel", help="cancel queued or running jobs: each ends in failed/ with a `cancelled` report",
        description="A queued job is moved to failed/ at once; a running one stops at its next progress "
                    "point (within 15 s, on whichever worker runs it), its partial outputs removed, nothing "
                    "published. One line per job on stdout. Exit codes: 0 every job cancelled; 1 one was "
                    "being published already (it is published); 2 an unknown NAME."))
    cancel.add_argument("names", nargs="+", metavar="NAME",
                        help="a job's name, as `status` lists it (team/fox)")
    priority = with_config(sub.add_parser(
        "priority", help="change a queued job's priority without rewriting its sidecar",
        description="Higher goes first; equal priorities go by arrival, which the job keeps. Held in "
                    "work/.control/priority/ until a worker claims the job. Prints the job's place in the "
                    "queue. Exit codes: 0; 2 when no job of that name is queued or N is out of range."))
    priority.add_argument("name", help="a queued job's name, as `status` lists it (e.g. team/fox)")
    priority.add_argument("priority", type=int, metavar="N", help="-100 to 100; 0 is normal")
    from i2v_watcher.ops.control import CONTROLS

    for name, help_text, description in CONTROLS:
        control = with_config(sub.add_parser(name, help=help_text, description=description))
        control.add_argument("--worker", metavar="ID", help="this worker only (default: every worker)")
    with_config(sub.add_parser(
        "web", help="serve the dashboard: queue, workers, gallery, failed jobs, submit form, /metrics",
        description="A separate process that reads the shared folders and the workers' heartbeats; it "
                    "listens on web_listen (127.0.0.1:8080 by default) and is read-only unless "
                    "web_allow_submit / web_allow_retry are on (then writes need web_token)."))
    check = sub.add_parser(
        "check-config", help="validate a config file and print the effective settings",
        description="Takes the config file as --config FILE like every other command; the positional "
                    "FILE of earlier versions is still accepted. Exit codes: 0 valid, 2 invalid.")
    config = check.add_mutually_exclusive_group()
    config.add_argument("--config", "-c", type=Path, metavar="FILE", help=CONFIG_HELP)
    config.add_argument("config_file", type=Path, nargs="?", metavar="FILE",
                        help="the TOML config file, the older positional form (same as --config FILE)")
    doctor = with_config(sub.add_parser(
        "doctor", help="check the set-up before starting the service, each problem with a fix",
        description="Check the config, GPUs, the diffusion extra, the model, ffmpeg and the presets, the "
                    "folders, the watch mode and systemd-python, as the service would find them. Exit codes: "
                    "0 nothing blocks the service (warnings allowed); 1 at least one error (an invalid "
                    "config included); 2 the config file cannot be read (missing, unreadable, not TOML)."))
    doctor.add_argument("--json", action="store_true",
                        help='one JSON document: {"ok": bool, "findings": [{"check", "status", "message", '
                             '"fix", ...}]}')
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command; a reader that went away (`status | head`) ends it quietly, as SIGPIPE ends other
    tools (exit 141), instead of a BrokenPipeError traceback."""
    try:
        try:
            return _command(argv)
        finally:
            sys.stdout.flush()  # what is still buffered fails here, not in the interpreter's exit
    except BrokenPipeError:
        # Python flushes stdout once more at exit: point it at devnull so that flush cannot fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def config_file(given: Path | None) -> tuple[Path, str | None]:
    """The config file: --config, else $I2V_CONFIG, else the default; with where its name came from
    when it was not given (said with every error about the file)."""
    if given is not None:
        return given, None
    named = os.environ.get(CONFIG_ENV)
    if named == "":
        raise StartupError(f"{CONFIG_ENV} is set but empty: set it to the config file, or unset it to "
                           f"use {DEFAULT_CONFIG}")
    if named is not None:
        return Path(named), f"the config file named by {CONFIG_ENV} (no --config given)"
    return DEFAULT_CONFIG, f"the default config file (no --config given, {CONFIG_ENV} not set)"


def _command(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        args.config, source = config_file(args.config or getattr(args, "config_file", None))
    except StartupError as exc:
        print(f"i2v-watcher: error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    if args.command == "doctor":  # an invalid config is one of its findings, not a refusal to run
        return cmd_doctor(args, source)
    try:
        try:
            settings = load_settings(args.config)
        except StartupError as exc:
            if source is not None:
                exc.add_note(f"{args.config} is {source}")
            raise
        configure(settings.log_level, settings.log_format)
        # A log warning, not a bare stderr line: it then takes the configured format (JSON lines stay
        # JSON, the journal gets its priority), and every command that loads the config shows it.
        for warning, fix in config_warnings(settings, args.config):
            structlog.get_logger("i2v_watcher").warning(f"{warning}; {fix}")
        return int(COMMANDS[args.command](settings, args))
    except StartupError as exc:
        print(f"i2v-watcher: error: {exc}", file=sys.stderr)
        for note in getattr(exc, "__notes__", ()):
            print(f"i2v-watcher: {note}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except KeyboardInterrupt:
        return 130


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    def daemon() -> Service:
        if settings.coordination == "celery":
            return _celery_module("service.dispatcher").Dispatcher(settings, once=args.once)  # type: ignore[no-any-return]
        from i2v_watcher.service.daemon import Daemon

        return Daemon(settings, once=args.once)
    return _serve(daemon, "daemon crashed")


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    def worker() -> Service:
        if settings.coordination != "celery":
            raise StartupError('`i2v-watcher worker` takes jobs from a Celery queue, for coordination = '
                               '"celery"; with coordination = "folders", `i2v-watcher run` runs them itself')
        return _celery_module("service.celery_worker").QueueWorker(settings)  # type: ignore[no-any-return]
    return _serve(worker, "worker crashed")


def _serve(make: Callable[[], Service], crashed: str) -> int:
    """Run a long-running command: 2 when it cannot start, 1 (logged with its traceback) on a crash."""
    log = structlog.get_logger("i2v_watcher")
    try:
        return make().serve()
    except StartupError as exc:
        log.error("cannot start", error=str(exc))
        return EXIT_CANNOT_RUN
    except Exception:
        log.exception(crashed)
        return EXIT_CRASH


def _celery_module(name: str) -> types.ModuleType:
    """A module of celery mode, which needs the `celery` extra (the core install has no celery)."""
    try:
        return importlib.import_module(f"i2v_watcher.{name}")
    except ImportError as exc:
        raise StartupError(f'coordination = "celery" needs the celery extra: pip install '
                           f"'i2v-watcher[celery]' ({exc})") from exc


def cmd_submit(settings: Settings, args: argparse.Namespace) -> int:
    from i2v_watcher.ops.reading import warn
    from i2v_watcher.ops.submit import build_sidecar, submit

    try:
        path = submit(settings, args.image, build_sidecar(args.prompt, args.set), args.name, warn=warn)
    except OSError as exc:  # the inbox or the image, not a bug: a message, not a traceback
        raise StartupError(f"cannot submit {args.image}: {exc}") from exc
    print(path)
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 2 when none of the folders it reads exists (a share not mounted, or wrong paths): then
    nothing it could show would be true. Some missing (a fresh install) are warnings, counted as unknown."""
    from i2v_watcher.ops.reading import warn
    from i2v_watcher.ops.status import COUNTED, missing_folders, render, snapshot

    configure("warning", settings.log_format)  # the inbox's scan says why jobs wait: not here
    result = snapshot(settings)
    missing = missing_folders(settings)
    if len(missing) == len(set(COUNTED.values())):
        if args.json:
            print(json.dumps(result.as_json(), indent=2))
        listed = ", ".join(f"{name} {path}" for name, path in missing.items())
        raise StartupError(f"none of the folders exists ({listed}): is the share mounted, and are these "
                           f"the paths meant in {args.config}?")
    for warning in result.warnings:
        warn(warning)
    print(json.dumps(result.as_json(), indent=2) if args.json else render(result))
    return 0


def cmd_retry(settings: Settings, args: argparse.Namespace) -> int:
    """Each report on its own: one that cannot be trusted is refused and left where it is, the others
    are retried; exit 2 when any was refused. Nothing to retry: said on stderr (stdout lists only the
    moved files), exit 0."""
    from i2v_watcher.ops.reading import printable, reason, warn
    from i2v_watcher.ops.reports import failed_reports, matching_reports
    from i2v_watcher.ops.retry import RetryRefused, retry

    found = failed_reports(settings, warn)
    reports = found if args.all else matching_reports(settings, found, args.name)
    if not reports:
        if not args.all:
            raise StartupError(_no_such_job(settings, args.name, found))
        print(f"i2v-watcher: nothing to retry: {_no_failed_jobs(settings)}", file=sys.stderr)
        return 0
    refused = 0
    for report in reports:
        try:
            moved = retry(settings, report)
        except (RetryRefused, OSError) as exc:
            refused += 1
            print(f"i2v-watcher: refused {printable(str(report))}: {printable(reason(exc))} "
                  "(the report and its files stay in place)", file=sys.stderr)
            continue
        for path in moved:
            print(printable(str(path)))
    return EXIT_CANNOT_RUN if refused else 0


def cmd_approve(settings: Settings, args: argparse.Namespace) -> int:
    from i2v_watcher.ops.reading import printable
    from i2v_watcher.run.drafts import ApproveRefused, approve

    try:
        result = approve(settings, args.name)
    except ApproveRefused as exc:
        raise StartupError(printable(str(exc))) from exc
    except OSError as exc:
        raise StartupError(f"cannot queue the final of {args.name!r}: {exc}") from exc
    if result.image is None:
        print(f"i2v-watcher: {printable(result.message)}", file=sys.stderr)
    else:
        print(printable(str(result.image)))
    return 0


def _ops(module: str, function: str) -> Callable[[Settings, argparse.Namespace], int]:
    """A command whose code is in i2v_watcher.ops.<module>, imported only when it runs."""
    def command(settings: Settings, args: argparse.Namespace) -> int:
        return int(getattr(importlib.import_module(f"i2v_watcher.ops.{module}"), function)(settings, args))
    return command


def _no_failed_jobs(settings: Settings) -> str:
    if settings.failed.is_dir():
        return f"there are no failed jobs in {settings.failed}"
    return f"the failed folder {settings.failed} does not exist"


def _no_such_job(settings: Settings, name: str, reports: list[Path], shown: int = 10) -> str:
    """No failed job of that name: what there is instead (names from the share, escaped)."""
    from i2v_watcher.ops.reading import printable
    from i2v_watcher.ops.reports import report_name

    text = f"no failed job named {name!r}"
    if not reports:
        return printable(f"{text}: {_no_failed_jobs(settings)}")
    names = sorted(report_name(settings, report) for report in reports)
    text += did_you_mean(name, names, lead="; ", most=3)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return printable(f"{text} (failed jobs: {', '.join(names[:shown])}{more}; see `i2v-watcher status`)")


def cmd_web(settings: Settings, args: argparse.Namespace) -> int:
    try:
        from i2v_watcher.web.app import serve
    except ImportError as exc:
        raise StartupError(f"`i2v-watcher web` needs the web extra: pip install 'i2v-watcher[web]' ({exc})") \
            from exc
    return serve(settings)


def cmd_check_config(settings: Settings, args: argparse.Namespace) -> int:
    from i2v_watcher.media.ffmpeg import find_ffmpeg
    from i2v_watcher.media.probes import check_presets
    from i2v_watcher.service.bootstrap import discover_backends

    discover_backends(settings)
    for name in settings.resident:
        backends.get(settings.auto_backend if name == "auto" else name)
    binary, origin = find_ffmpeg(settings.ffmpeg_path)
    for note in check_presets(settings, binary):
        print(note, file=sys.stderr)
    effective = settings.model_dump(mode="json")
    if effective.get("broker_url"):  # never print the broker's password
        effective["broker_url"] = _masked(effective["broker_url"])
    print(json.dumps(effective, indent=2))
    print(f"ffmpeg: {binary.path} ({origin}; {binary.version})", file=sys.stderr)
    if not settings.inbox.is_dir():
        note = "it will be created" if settings.create_inbox else "the daemon will refuse to start"
        print(f"warning: the inbox {settings.inbox} does not exist; {note}", file=sys.stderr)
    print("configuration OK", file=sys.stderr)
    return 0


def cmd_doctor(args: argparse.Namespace, source: str | None) -> int:
    from i2v_watcher.ops.doctor import EXIT_UNREADABLE, diagnose, render

    configure("warning", "auto")  # stdout carries the findings (or the JSON document) alone
    try:
        findings, code = diagnose(args.config)
    except KeyboardInterrupt:
        return 130
    print(render(findings, args.json))
    if code == EXIT_UNREADABLE and source is not None:
        print(f"i2v-watcher: {args.config} is {source}", file=sys.stderr)
    return code


def _masked(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:**@{host}"))


COMMANDS = {"run": cmd_run, "worker": cmd_worker, "submit": cmd_submit, "status": cmd_status,
            "retry": cmd_retry, "approve": cmd_approve, "web": cmd_web, "check-config": cmd_check_config,
            "cancel": _ops("cancel", "cancel_command"), "priority": _ops("control", "priority_command"),
            "pause": _ops("control", "pause_command"), "drain": _ops("control", "pause_command"),
            "resume": _ops("control", "resume_command")}
