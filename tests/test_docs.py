"""The documentation: the MkDocs site builds with --strict (no broken link or anchor, no page left out of
the nav), its reference pages name everything the code has, and the README stays short, with a
Quickstart that works as written."""

from __future__ import annotations

import argparse
import html
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO
from i2v_watcher import backends
from i2v_watcher.cli import _parser
from i2v_watcher.config.models import DiffusionSettings, ModelSettings
from i2v_watcher.config.settings import Settings, load_settings
from i2v_watcher.job.spec import JobDefaults, JobSpec
from i2v_watcher.ops.submit import build_sidecar, check_submission
from i2v_watcher.steps import available, step_class
from i2v_watcher.steps.presets import SHIPPED_PRESETS

TEST_COMMAND = "bash tests/setup.sh && .venv/bin/python -m pytest -n 2"
README = REPO / "README.md"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"), "-d", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=120, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def page(site: Path, name: str) -> str:
    """A built page as text: tags dropped, entities decoded."""
    raw = (site / name / "index.html").read_text(encoding="utf-8")
    return html.unescape(re.sub(r"<[^>]+>", " ", raw))


def test_settings_reference_names_every_setting(site: Path) -> None:
    text = page(site, "reference/settings")
    for name in Settings.model_fields:
        assert name in text, name
        if name not in ("models", "presets"):
            assert f"I2V_{name.upper()}" in text, name
    for table, model in (("defaults", JobDefaults), ("diffusion", DiffusionSettings)):
        for name in model.model_fields:
            assert f"I2V_{table.upper()}__{name.upper()}" in text, f"{table}.{name}"
    for name in ModelSettings.model_fields:
        assert name in text, f"models.{name}"


def test_sidecar_reference_names_and_describes_every_field(site: Path) -> None:
    text = page(site, "reference/sidecar")
    for name, info in JobSpec.model_fields.items():
        assert name in text, name
        assert info.description, f"JobSpec.{name} needs Field(description=...): the reference shows it"
    backends.discover()
    for name in backends.available():
        assert name in text, name
        options = backends.get(name).options_model
        for option in options.model_fields if options else ():
            assert option in text, f"{name}.{option}"


def _commands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_cli_reference_names_every_command_and_option(site: Path) -> None:
    text = page(site, "reference/cli")
    for name, sub in _commands().items():
        assert f"i2v-watcher {name}" in text, name
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings or [str(action.metavar or action.dest)]:
                assert option in text, f"{name} {option}"
    assert "--version" in text


def test_steps_and_presets_references_name_every_step_and_preset(site: Path) -> None:
    steps = page(site, "reference/steps")
    for name in available():
        assert name in steps, name
        for field in step_class(name).model_fields:
            assert field in steps, f"{name}.{field}"
    presets = page(site, "reference/presets")
    for name in SHIPPED_PRESETS:
        assert name in presets, name


def test_the_install_procedure_and_the_example_config_are_in_the_site(site: Path) -> None:
    deploy = page(site, "operations/deploy")
    assert "Drop-ins" in deploy and "deploy/README.md" in deploy
    assert "max_silent_s" in page(site, "reference/example-config")


def test_the_test_command_is_stated_where_ci_runs_it() -> None:
    assert TEST_COMMAND in (REPO / ".ci" / "run").read_text()
    assert TEST_COMMAND in README.read_text()
    assert TEST_COMMAND in (REPO / "docs" / "development.md").read_text()


def test_setup_waits_for_another_apt_holding_the_lock(tmp_path: Path) -> None:
    """tests/setup.sh, run with a PATH that lacks the Debian packages: every apt-get it runs waits for
    the dpkg and lists locks (DPkg::Lock::Timeout) rather than failing at once. apt-get, sudo and python3
    are stand-ins that record their arguments; the script is a copy, so nothing is installed."""
    (tmp_path / "tests").mkdir()
    script = tmp_path / "tests" / "setup.sh"
    script.write_text((REPO / "tests" / "setup.sh").read_text())
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    for tool in ("id", "dirname", "env", "bash", "mkdir", "chmod"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    stand_ins = {"apt-get": f'echo "apt-get $*" >> {calls}',
                 "sudo": 'exec "$@"',
                 "python3": 'if [ "$1" = -c ]; then exit 0; fi\nmkdir -p .venv/bin\n'
                            'printf "#!/bin/sh\\nexit 0\\n" > .venv/bin/pip; chmod +x .venv/bin/pip'}
    for name, body in stand_ins.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    run = subprocess.run([str(bin_dir / "bash"), str(script)], capture_output=True, text=True, timeout=30,
                         env={"PATH": str(bin_dir)})
    assert run.returncode == 0, run.stderr
    apt = calls.read_text().splitlines()
    assert [line.split()[3] for line in apt] == ["update", "install"]
    assert all(line.startswith("apt-get -o DPkg::Lock::Timeout=600 ") for line in apt), apt


def test_the_readme_is_short_and_its_links_resolve() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith(("http://", "https://")):
            assert (REPO / target).exists(), target


def _relative_links(markdown: str) -> list[str]:
    """The targets of the Markdown links outside code, without their anchor; no URL, no bare anchor."""
    prose = re.sub(r"```.*?```", "", markdown, flags=re.S)
    prose = re.sub(r"`[^`\n]*`", "", prose)
    targets = [t.partition("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", prose)]
    return [t for t in targets if t and not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_every_relative_link_of_the_markdown_files_resolves_in_the_repository() -> None:
    """README.md invites reading docs/ as Markdown: each link there goes to a file of the repository
    (the site's own operations/deploy.md is linked as deploy/README.md, which the hook points at it)."""
    pages = [README, REPO / "deploy" / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    broken = [f"{page.relative_to(REPO)}: {target}" for page in pages
              for target in _relative_links(page.read_text()) if not (page.parent / target).exists()]
    assert broken == []


def test_the_hub_command_named_is_the_one_the_pinned_stack_ships() -> None:
    """huggingface_hub >= 0.34 (the diffusion extra) installs `hf`; `huggingface-cli` is gone from it."""
    sources = [README, REPO / "pyproject.toml", *(REPO / "docs").rglob("*.md"), *(REPO / "deploy").rglob("*"),
               *(REPO / "config").rglob("*"), *(REPO / "i2v_watcher").rglob("*.py")]
    naming = [str(path.relative_to(REPO)) for path in sources
              if path.is_file() and "huggingface-cli" in path.read_text(errors="replace")]
    assert naming == []
    assert '"huggingface-hub>=0.34"' in (REPO / "pyproject.toml").read_text()


def test_each_generated_reference_has_a_pointer_for_markdown_readers(site: Path) -> None:
    """A page whose content is generated when the site is built says so to whoever reads the file, and
    where that content comes from; the site leaves the pointer out (it has the content)."""
    marked = [path for path in sorted((REPO / "docs").rglob("*.md"))
              if re.search(r"^<!-- reference:", path.read_text(), re.M)]
    assert len(marked) >= 7
    for path in marked:
        text = path.read_text()
        pointer = re.search(r"^<!-- markdown-only -->\n(.*?)^<!-- /markdown-only -->$", text, re.M | re.S)
        assert pointer is not None, path
        assert pointer.start() < text.index("<!-- reference:"), path
        words = " ".join(line.removeprefix("> ") for line in pointer.group(1).splitlines())
        assert "generated from" in words and "mkdocs serve" in words, path
        built = page(site, str(path.relative_to(REPO / "docs").with_suffix("")))
        assert "Reading this as a Markdown file" not in built, path
    web = (site / "web" / "index.html").read_text(encoding="utf-8")  # deploy/README.md's link: its page
    assert 'href="../operations/deploy/#the-web-dashboard"' in web and "README.md" not in web


def _shell_lines(markdown: str) -> list[str]:
    return [line for block in re.findall(r"```sh\n(.*?)```", markdown, re.S) for line in block.splitlines()]


def test_the_quickstart_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first command installs and starts the daemon with the shipped config; the submit example
    names the sample image in the repository, with a sidecar that submit itself accepts."""
    lines = _shell_lines(README.read_text())
    assert any("i2v-watcher run --config config/i2v-watcher.toml" in line for line in lines)
    assert (REPO / "config" / "i2v-watcher.toml").is_file()
    submits = [shlex.split(line) for line in lines if " submit " in line]
    assert submits
    for words in submits:
        images = [w for w in words if w.lower().endswith((".jpg", ".jpeg", ".png", ".webp"))]
        assert images, words
        image = REPO / images[0]
        assert image.is_file(), image
        assert image.stat().st_size < 200_000, "the sample image should stay small"
        with Image.open(image) as picture:
            assert min(picture.size) >= 256
        args = _parser().parse_args(words[1:])  # what the shell passes to the program
        assert args.command == "submit" and args.image == Path(images[0])
        monkeypatch.chdir(tmp_path)  # the config's relative folders land here; nothing is written
        check_submission(load_settings(REPO / args.config), build_sidecar(args.prompt, args.set))
