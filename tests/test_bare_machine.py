"""The README's test command on a bare machine: without the optional system packages, every
test that needs one skips, naming the Debian package that brings it, and none errors (at
collection or later); under ATOMICFILE_REQUIRE_ALL=1 (CI) the same tests fail instead.

The machine is made bare for a child pytest, for real: a PATH holding every program of ours
but strace, setfacl, fusermount3, mkfs.* and the compilers, and FUSE_LIBRARY_PATH naming a
libfuse that isn't there (mfusepy, which loads it, honours that variable).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from conftest import needs_root

TESTS = Path(__file__).resolve().parent
HIDDEN = {"strace", "setfacl", "getfacl", "fusermount3", "mkfs.ext4", "mkfs.vfat", "mkfs.fat",
          "cmake", "g++", "c++", "gcc", "cc", "chromium"}  # fmt: skip
#: The package each kind of test must name when it skips.
EXPECTED = {
    "test_noclobber.py": "fuse3",
    "test_secrets.py": "acl",
    "powerloss/": "fuse3",  # the first thing missing there
    "test_docs.py": "chromium",
}


def bare_path(where: Path) -> str:
    """A directory of links to every program on PATH except HIDDEN (the first of each name,
    as PATH lookup finds it)."""
    where.mkdir()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            link = where / name
            if name not in HIDDEN and not os.path.lexists(link):
                link.symlink_to(os.path.join(directory, name))
    return str(where)


def run_bare(tmp_path: Path, *args: str, require_all: bool) -> tuple[int, list[ET.Element], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOMICFILE_")}
    env.update(
        PATH=bare_path(tmp_path / "bin"),
        FUSE_LIBRARY_PATH=str(tmp_path / "no-libfuse3.so.3"),
        ATOMICFILE_LAZYFS_BUILD=str(tmp_path / "lazyfs-cache"),  # nothing built here either
    )
    if require_all:
        env["ATOMICFILE_REQUIRE_ALL"] = "1"
    report = tmp_path / "report.xml"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={report}",
         "-q", "--basetemp", str(tmp_path / "base"), *args],
        env=env, cwd=TESTS.parent, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    cases = list(ET.parse(report).getroot().iter("testcase")) if report.exists() else []
    return done.returncode, cases, done.stdout[-3000:] + done.stderr[-3000:]


def outcome(case: ET.Element) -> tuple[str, str]:
    """("passed" | "skipped" | "failure" | "error", message)."""
    for kind in ("skipped", "failure", "error"):
        found = case.find(kind)
        if found is not None:
            return kind, found.get("message", "")
    return "passed", ""


@needs_root  # several of the selected tests need root first: as another user they'd skip
def test_bare_machine_skips_naming_packages(tmp_path: Path) -> None:
    code, cases, out = run_bare(
        tmp_path, "-m", "needs or powerloss", "--ignore", str(Path(__file__)), "tests",
        require_all=False,
    )  # fmt: skip
    assert code == 0, out
    assert len(cases) > 30, out  # the FUSE, ACL, strace and power-loss tests
    outcomes = {(c.get("file") or c.get("classname", ""), c.get("name")): outcome(c) for c in cases}
    wrong = {k: v for k, v in outcomes.items() if v[0] != "skipped"}
    assert wrong == {}, out
    unnamed = {k: v for k, v in outcomes.items() if not re.search(r"apt-get install \S", v[1])}
    assert unnamed == {}
    named = {m.group(1) for _, msg in outcomes.values()
             for m in [re.search(r"apt-get install (\S+)", msg)] if m}  # fmt: skip
    assert {"strace", "acl", "fuse3"} <= named, named
    for case in cases:
        where = (case.get("classname") or "").replace(".", "/")
        for module, package in EXPECTED.items():
            if module.removesuffix(".py") in where:
                assert f"apt-get install {package}" in outcome(case)[1], (where, outcome(case))


@needs_root
def test_bare_machine_fails_loudly_when_everything_is_required(tmp_path: Path) -> None:
    code, cases, out = run_bare(
        tmp_path, "tests/test_noclobber.py", "tests/security/test_secrets.py", "-k",
        "noclobber or acl", require_all=True,
    )  # fmt: skip
    assert code == 1, out
    assert len(cases) >= 4, out
    messages = []
    for case in cases:
        kind, message = outcome(case)
        assert kind in ("failure", "error"), (case.get("name"), kind, message)
        assert "ATOMICFILE_REQUIRE_ALL=1" in message
        messages.append(message)
    assert any("apt-get install fuse3" in m for m in messages), messages
    assert any("apt-get install acl" in m for m in messages), messages
