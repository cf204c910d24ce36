"""The documentation stays true to the code: docs/cli.md lists every verb as the code defines it,
and nothing in the repository points at files outside it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from pfsfuse.tools import gen_cli_docs

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = f"run `{gen_cli_docs.REGENERATE}` and commit docs/cli.md"

# Folders of other people's code or of generated files, never our text.
SKIP_DIRS = {
    ".git",
    ".venv",
    ".emulators",
    "node_modules",
    "__pycache__",
    ".pytest_cache",
    ".hypothesis",
    "build",
    "dist",
}
# A reference to a place beside or above the repository: a relative path climbing out of it into
# the workspace's shared folder, or an absolute path into the workspace. Spelt in pieces so that
# this file does not match itself.
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", r"(?<![\w./-])/" + "work/", r"\bshared/" + "(?:seeds|DESIGN)"]))


def test_cli_doc_lists_every_command():
    text = gen_cli_docs.DOC.read_text() if gen_cli_docs.DOC.exists() else ""
    missing = [name for name in gen_cli_docs.command_names() if f"\n## {name}\n" not in text]
    assert not missing, f"docs/cli.md lacks {', '.join(missing)}: {REGENERATE}"


def test_cli_doc_is_current():
    text = gen_cli_docs.DOC.read_text() if gen_cli_docs.DOC.exists() else ""
    assert text == gen_cli_docs.render(), f"docs/cli.md is out of date with the click commands: {REGENERATE}"


def test_generator_check_mode_reports_a_stale_doc(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "cli.md"
    stale.write_text(gen_cli_docs.render().replace("## put-file\n", "## put-files\n"))
    monkeypatch.setattr(gen_cli_docs, "DOC", stale)
    assert gen_cli_docs.main(["--check"]) == 1
    assert gen_cli_docs.REGENERATE in capsys.readouterr().err
    assert gen_cli_docs.main([]) == 0
    assert gen_cli_docs.main(["--check"]) == 0


def test_cli_doc_documents_options_and_help():
    text = gen_cli_docs.render()
    put_file = text.split("\n## put-file\n", 1)[1].split("\n## ", 1)[0]
    assert "pfs put-file [OPTIONS] REPO REF [PATH]" in put_file
    assert "Put files into REF" in put_file
    assert "`--split [line\\|json\\|sql]`" in put_file
    assert "--parallelism" not in put_file  # hidden options stay hidden


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        return [ROOT / name for name in out.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file but the skipped folders
        found = []
        for top, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
            found += [Path(top) / f for f in files]
        return found


def test_no_file_refers_outside_the_repository():
    offenders = []
    for path in _tracked_files():
        if SKIP_DIRS.intersection(path.relative_to(ROOT).parts) or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:  # binary
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "files refer to paths outside the repository:\n" + "\n".join(offenders)


def test_outside_pattern_catches_the_forms_it_is_for():
    for bad in [
        "see ../" + "sha" + "red/x.md",
        "cd /" + "work/main",
        "in sha" + "red/DES" + "IGN.md",
        "sha" + "red/se" + "eds/x.txt",
    ]:
        assert OUTSIDE.search(bad), bad
    for fine in ["docs/design.md", "$PFS_HOME/mounts", "a shared subtree", "/tmp/work/x"]:
        assert not OUTSIDE.search(fine), fine


_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)\s]*)?\)")


def test_links_between_docs_lead_to_files_that_exist():
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = [
        f"{page.relative_to(ROOT)}: {target}"
        for page in pages
        for target in _LINK.findall(page.read_text())
        if "://" not in target and not (page.parent / target).exists()
    ]
    assert not broken, "links to missing files:\n" + "\n".join(broken)
