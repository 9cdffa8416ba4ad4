"""Mistakes in the configuration and on the command line, caught at once and explained in plain words:
the setting, where its value came from (the TOML file's line or the I2V_* variable), the value and
what is allowed; short, never the whole effective configuration, never a traceback. Real CLI runs."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import Folders, cli, daemon_env, make_image
from i2v_watcher.config.source import env_source, toml_line

ONE_ERROR_MAX = 400  # characters: one problem is one short line, never a dump of the settings


def line_of(config: Path, start: str) -> int:
    """The 1-based line of the config file that starts with this text."""
    lines = config.read_text().splitlines()
    return next(n for n, line in enumerate(lines, start=1) if line.startswith(start))


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.strip()]


def status(folders: Folders, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return cli("status", *args, "--config", str(folders.config), env=daemon_env(**env))


# ---- config errors: setting, source, value, allowed range; short ------------------------------------
def test_a_bad_value_in_the_file_names_its_line_value_and_range(folders: Folders) -> None:
    config = folders.write_config(settle_s=-1)
    result = status(folders)
    assert result.returncode == 2 and result.stdout == ""
    [line] = error_lines(result)
    assert line == (f"i2v-watcher: error: invalid configuration: settle_s must be between 0 and 3600 "
                    f"(got -1, in {config} line {line_of(config, 'settle_s =')})")
    assert len(line) < ONE_ERROR_MAX


def test_a_value_from_the_environment_is_blamed_on_its_variable(folders: Folders) -> None:
    result = status(folders, I2V_SETTLE_S="-3")
    assert result.returncode == 2
    [line] = error_lines(result)
    assert "settle_s must be between 0 and 3600" in line and '"-3"' in line
    assert "from the environment variable I2V_SETTLE_S" in line
    assert str(folders.config) not in line and len(line) < ONE_ERROR_MAX


@pytest.mark.parametrize("env,variable", [
    ({"I2V_DIFFUSION__DTYPE": "float8"}, "I2V_DIFFUSION__DTYPE"),
    ({"I2V_DIFFUSION": '{"dtype": "float8"}'}, "I2V_DIFFUSION"),
    ({"i2v_diffusion__dtype": "float8"}, "I2V_DIFFUSION__DTYPE"),  # read case-insensitively
])
def test_a_nested_value_from_the_environment_names_its_variable(folders: Folders, env: dict[str, str],
                                                                variable: str) -> None:
    folders.write_config(diffusion={"dtype": "float16", "device": "cpu"})
    result = status(folders, **env)
    [line] = error_lines(result)
    assert result.returncode == 2
    assert 'diffusion.dtype must be one of "auto", "bfloat16", "float16" or "float32"' in line
    assert f'got "float8", from the environment variable {variable})' in line


def test_every_problem_is_listed_one_line_each_in_file_order(folders: Folders) -> None:
    config = folders.write_config(settle_s=-1, keep_inputs="trash", settle_s_typo=3,
                                  diffusion={"dtype": "float8"}, defaults={"num_frames": 0})
    result = status(folders)
    assert result.returncode == 2
    first, *problems = error_lines(result)
    assert first == "i2v-watcher: error: invalid configuration: 5 problems:"
    expected = [
        ("settle_s must be between 0 and 3600 (got -1", "settle_s ="),
        ('keep_inputs must be one of "done", "outbox" or "delete" (got "trash"', "keep_inputs ="),
        ("settle_s_typo: unknown key; did you mean settle_s?", "settle_s_typo ="),
        ("defaults.num_frames must be between 1 and 512 (got 0", '"num_frames" = 0'),
        ('diffusion.dtype must be one of "auto", "bfloat16", "float16" or "float32" (got "float8"',
         '"dtype" ='),
    ]
    by_line = sorted(expected, key=lambda pair: line_of(config, pair[1]))
    assert len(problems) == len(by_line)
    for problem, (said, start) in zip(problems, by_line, strict=True):
        assert problem.startswith(f"  {said}")
        assert problem.endswith(f"in {config} line {line_of(config, start)})")
        assert len(problem) < ONE_ERROR_MAX


def test_a_conflict_between_settings_names_both_and_dumps_nothing(folders: Folders) -> None:
    config = folders.write_config(retry_backoff_s=10.0, retry_backoff_max_s=5.0)
    result = status(folders)
    [line] = error_lines(result)
    assert result.returncode == 2 and len(line) < ONE_ERROR_MAX
    lines = f"{line_of(config, 'retry_backoff_max_s')} and {line_of(config, 'retry_backoff_s =')}"
    assert line.endswith(f"retry_backoff_max_s (5) must be at least retry_backoff_s (10) (in {config} lines "
                         f"{lines})")
    assert str(folders.inbox) not in line  # once, the whole effective config came with it
    mixed = status(folders, I2V_RETRY_BACKOFF_MAX_S="1")
    [line] = error_lines(mixed)
    assert "retry_backoff_max_s from the environment variable I2V_RETRY_BACKOFF_MAX_S; retry_backoff_s in " \
           f"{config} line {line_of(config, 'retry_backoff_s =')}" in line


def test_folders_inside_each_other_name_both_settings_and_lines(folders: Folders) -> None:
    config = folders.write_config(done=str(folders.work / "done"))
    [line] = error_lines(status(folders))
    assert f"done ({folders.work / 'done'}) must not lie inside work ({folders.work})" in line
    assert f"(in {config} lines {line_of(config, 'done =')} and {line_of(config, 'work =')})" in line


def test_a_missing_folder_setting_says_how_to_set_it(folders: Folders) -> None:
    del folders.settings["failed"]
    config = folders.write_config()
    [line] = error_lines(status(folders))
    assert line.endswith(f"failed is required but not set: add it to {config} (or set I2V_FAILED)")


# ---- malformed JSON in an I2V_* table variable: which variable, why; exit 2 -------------------------
COMMANDS: list[tuple[str, ...]] = [("run", "--once"), ("worker",), ("status",), ("retry", "--all"), ("web",),
                                   ("check-config",), ("submit", "IMAGE")]


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_malformed_json_in_a_table_variable_is_named_by_every_command(folders: Folders, tmp_path: Path,
                                                                      command: tuple[str, ...]) -> None:
    image = str(make_image(tmp_path / "a.png"))
    args = [image if arg == "IMAGE" else arg for arg in command]
    result = cli(*args, "--config", str(folders.config), env=daemon_env(I2V_DIFFUSION="{bad json"))
    assert result.returncode == 2 and result.stdout == ""
    [line] = error_lines(result)
    assert line.startswith("i2v-watcher: error: invalid configuration: I2V_DIFFUSION='{bad json' is not "
                           "valid JSON: Expecting property name enclosed in double quotes at column 2; it "
                           "must hold a JSON object, e.g. I2V_DIFFUSION='{\"dtype\": \"float16\"}'")
    assert folders.files("inbox") == []


@pytest.mark.parametrize("variable,value,said", [
    ("I2V_MODELS", '{"svd": ', "Expecting value at column 9; it must hold a JSON object"),
    ("I2V_DEFAULTS", "num_frames=24", "Expecting value at column 1; it must hold a JSON object"),
    ("I2V_BACKENDS", "[svd", "Expecting value at column 2; it must hold a JSON array"),
    ("I2V_DIFFUSION__OOM_LADDER", "[{", "at column 3; it must hold a JSON array"),
])
def test_malformed_json_names_the_variable_and_the_position(folders: Folders, variable: str, value: str,
                                                            said: str) -> None:
    result = status(folders, **{variable: value})
    [line] = error_lines(result)
    assert result.returncode == 2
    assert f"{variable}='{value}' is not valid JSON: " in line and said in line


def test_every_malformed_table_variable_is_named_at_once(folders: Folders) -> None:
    result = status(folders, I2V_DIFFUSION="{bad", I2V_PLUGINS="my_plugin")
    first, *problems = error_lines(result)
    assert result.returncode == 2 and first.endswith("2 problems:")
    assert sorted(p.split(" is not valid JSON")[0].strip() for p in problems) == \
        ["I2V_DIFFUSION='{bad'", "I2V_PLUGINS='my_plugin'"]


def test_doctor_reports_malformed_json_as_a_finding(folders: Folders) -> None:
    result = cli("doctor", "--json", "--config", str(folders.config), env=daemon_env(I2V_DIFFUSION="{bad"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    config = [f for f in json.loads(result.stdout)["findings"] if f["check"] == "config"]
    assert [f["status"] for f in config] == ["error"]
    assert "I2V_DIFFUSION='{bad' is not valid JSON" in config[0]["message"]
    assert "unset I2V_DIFFUSION" in config[0]["fix"]


def test_doctor_lists_each_config_problem_with_its_source(folders: Folders) -> None:
    config = folders.write_config(settle_s=-1)
    result = cli("doctor", "--json", "--config", str(config), env=daemon_env(I2V_POLL_INTERVAL_S="0"))
    findings = [f for f in json.loads(result.stdout)["findings"] if f["check"] == "config"]
    assert result.returncode == 1
    assert {f["errors"][0]["loc"]: f["errors"][0]["source"] for f in findings} == {
        "settle_s": f"in {config} line {line_of(config, 'settle_s =')}",
        "poll_interval_s": "from the environment variable I2V_POLL_INTERVAL_S"}
    assert all(len(f["message"]) < ONE_ERROR_MAX for f in findings)


# ---- settle_s = 0 is valid, but warned about ------------------------------------------------------
def test_settle_s_zero_is_warned_about_by_every_command_and_doctor(folders: Folders) -> None:
    config = folders.write_config(settle_s=0)
    result = status(folders, "--json")
    assert result.returncode == 0
    warnings = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert [w["level"] for w in warnings] == ["warning"]  # log_format = "json": a JSON line like the rest
    where = f"in {config} line {line_of(config, 'settle_s =')}"
    assert warnings[0]["event"].startswith(f"settle_s = 0 ({where}): an image is taken the moment it appears")
    json.loads(result.stdout)  # stdout stays the document alone
    doctor = json.loads(cli("doctor", "--json", "--config", str(config)).stdout)
    [finding] = [f for f in doctor["findings"] if f["check"] == "config" and f["status"] == "warning"]
    assert "settle_s = 0" in finding["message"] and "settle_s" in finding["fix"]
    folders.write_config(settle_s=0.5)
    assert "settle_s = 0" not in status(folders).stderr


# ---- check-config takes --config like every other command ----------------------------------------
def test_check_config_takes_config_or_the_positional_file(folders: Folders) -> None:
    for args in (["--config", str(folders.config)], ["-c", str(folders.config)], [str(folders.config)]):
        result = cli("check-config", *args)
        assert result.returncode == 0 and "configuration OK" in result.stderr, args
        assert json.loads(result.stdout)["inbox"] == str(folders.inbox)
    assert cli("check-config").returncode == 2
    both = cli("check-config", "--config", str(folders.config), str(folders.config))
    assert both.returncode == 2 and "not allowed with" in both.stderr
    assert "--config FILE" in cli("check-config", "--help").stdout


# ---- status: done jobs listed as the README says; folders that do not exist -----------------------
def published(folders: Folders, name: str, when: float, **extra: Any) -> None:
    """A clip's metadata as the daemon writes it (the catalog's index counts a clip by it), published
    at `when`."""
    marker = folders.outbox / f"{name}.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromtimestamp(when, UTC).isoformat()
    marker.write_text(json.dumps({"job_id": name, "name": name, "files": [f"{name}.mp4", f"{name}.json"],
                                  "published_at": stamp, **extra}))
    (folders.outbox / f"{name}.mp4").write_bytes(b"mp4")
    os.utime(marker, (when, when))


def test_status_lists_done_jobs_latest_last_in_text_and_json(folders: Folders) -> None:
    for folder in ("work", "failed"):
        (folders.root / folder).mkdir()
    names = [f"clip{n:02d}" for n in range(12)] + ["trip/IMG_0002"]
    # Variants of a set are marked (clip01; a `variant` of another shape is none, clip02).
    of = {"of": "20261201T000000Z-00000001", "name": "clip00", "count": 3}
    variants = {"clip01": {**of, "index": 2}, "clip02": {**of, "index": "2"}}
    for index, name in enumerate(reversed(names)):  # published in the reverse order of their names
        published(folders, name, 1_700_000_000 + index,
                  **({"variant": variants[name]} if name in variants else {}))
    data = json.loads(status(folders, "--json").stdout)
    assert data["counts"]["done"] == 13 and data["done"] == list(reversed(names))
    assert data["done_variants"] == {"clip01": "variant 2 of 3"}
    text = status(folders)
    assert text.returncode == 0 and text.stderr == ""
    lines = text.stdout.splitlines()
    start = lines.index("done (latest last):")
    assert lines[start + 1] == "  … 3 earlier (`status --json` lists them all)"
    assert lines[start + 2:start + 12] == [
        f"  {name}" + ("  (variant 2 of 3)" if name == "clip01" else "") for name in data["done"][-10:]]


def test_status_shows_folders_that_do_not_exist_as_unknown_not_zero(folders: Folders) -> None:
    make_image(folders.inbox / "queued.png")
    result = status(folders)
    assert result.returncode == 0
    assert result.stdout.splitlines()[:4] == [
        "queued       1",
        "in progress  ?  (the work folder does not exist)",
        "done         ?  (the outbox folder does not exist)",
        "failed       ?  (the failed folder does not exist)"]
    for folder in ("work", "outbox", "failed"):
        assert (f"warning: the {folder} folder {folders.root / folder} does not exist: is the share mounted? "
                "(or no daemon has created it yet)") in result.stderr
    counts = json.loads(status(folders, "--json").stdout)["counts"]
    assert counts == {"queued": 1, "in_progress": None, "done": None, "failed": None, "workers_alive": None}


def test_status_with_none_of_its_folders_is_an_error(folders: Folders, tmp_path: Path) -> None:
    config = folders.write_config(inbox=str(tmp_path / "not-mounted" / "inbox"))
    result = status(folders)
    assert result.returncode == 2 and result.stdout == ""  # no table of zeros
    [line] = error_lines(result)
    inbox = tmp_path / "not-mounted" / "inbox"
    assert line.startswith(f"i2v-watcher: error: none of the folders exists (inbox {inbox}, ")
    assert line.endswith(f"is the share mounted, and are these the paths meant in {config}?")
    as_json = status(folders, "--json")
    assert as_json.returncode == 2 and json.loads(as_json.stdout)["counts"]["queued"] is None


# ---- retry: nothing to retry; an unknown name says what there is -----------------------------------
def failed_report(folders: Folders, stem: str) -> None:
    folders.failed.mkdir(exist_ok=True)
    make_image(folders.failed / f"{stem}.png")
    report: dict[str, Any] = {"input": stem, "files": [f"{stem}.png"], "stage": "load", "message": "bad"}
    (folders.failed / f"{stem}.error.json").write_text(json.dumps(report))


def test_retry_all_with_nothing_to_retry_says_so_on_stderr(folders: Folders) -> None:
    folders.failed.mkdir()
    result = cli("retry", "--all", "--config", str(folders.config))
    assert result.returncode == 0 and result.stdout == ""  # stdout lists moved files only
    assert result.stderr == f"i2v-watcher: nothing to retry: there are no failed jobs in {folders.failed}\n"


def test_retry_of_an_unknown_name_lists_the_failed_jobs(folders: Folders) -> None:
    for stem in ("beach", "sunset"):
        failed_report(folders, stem)
    result = cli("retry", "beech", "--config", str(folders.config))
    assert result.returncode == 2
    assert result.stderr == ("i2v-watcher: error: no failed job named 'beech'; did you mean beach? (failed "
                             "jobs: beach, sunset; see `i2v-watcher status`)\n")
    (folders.failed / "beach.error.json").unlink()
    (folders.failed / "sunset.error.json").unlink()
    result = cli("retry", "beach", "--config", str(folders.config))
    assert result.returncode == 2 and f"there are no failed jobs in {folders.failed}" in result.stderr


# ---- where a value was set: the TOML scan and the environment --------------------------------------
TOML = """\
settle_s = 2
"quoted" = 1
diffusion.device = "cpu"
[diffusion]
dtype = "float16"   # a comment
[[diffusion.oom_ladder]]
resolution = "512p"
[[diffusion.oom_ladder]]
num_frames = 0.5
[models."i2vgen-xl"]
model = "/models/i2v"
[ defaults ]
postprocess = { a = 1 }
"""


@pytest.mark.parametrize("loc,line", [
    (("settle_s",), 1), (("quoted",), 2), (("diffusion", "device"), 3), (("diffusion", "dtype"), 5),
    (("diffusion", "compile"), 4), (("diffusion", "oom_ladder", 0, "resolution"), 7),
    (("diffusion", "oom_ladder", 1, "num_frames"), 9), (("diffusion", "oom_ladder", 1), 8),
    (("models", "i2vgen-xl", "model"), 11), (("models", "i2vgen-xl", "variant"), 10),
    (("defaults", "postprocess", "a"), 13), (("work",), None),
])
def test_the_line_of_a_setting(loc: tuple[str | int, ...], line: int | None) -> None:
    assert toml_line(TOML, loc) == line


def test_the_variable_of_a_setting() -> None:
    env = {"I2V_SETTLE_S": "1", "I2V_DIFFUSION": '{"dtype": "float16", "oom_ladder": [{"offload": "model"}]}',
           "I2V_MODELS__SVD__MODEL": "/m", "PATH": "/bin"}
    assert env_source(("settle_s",), env) == "I2V_SETTLE_S"
    assert env_source(("diffusion", "dtype"), env) == "I2V_DIFFUSION"
    assert env_source(("diffusion", "oom_ladder", 0, "offload"), env) == "I2V_DIFFUSION"
    assert env_source(("diffusion", "device"), env) is None  # from the file: the table is merged key by key
    assert env_source(("models", "svd", "model"), env) == "I2V_MODELS__SVD__MODEL"
    assert env_source(("models", "svd", "variant"), env) is None
    assert env_source(("poll_interval_s",), env) is None
