"""The documentation is tested: every ```python block of README.md and docs/*.md runs, each
in a fresh temporary directory and a fresh interpreter; every ```console block's commands
run and print what the page shows; every script in examples/ runs; the docs site builds
with warnings as errors.

A block runs as written: top-level `await` runs it on asyncio (`asyncio.run`). A block that
needs an S3 server is marked by the comment line `<!-- test: s3 -->` just before it and runs
against a local moto_server with a bucket named `bucket` (the endpoint comes from
`AWS_ENDPOINT_URL`, as boto reads it; the credentials are dummies). The only other mark is
`<!-- test: skip REASON -->`, which skips the block naming REASON.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from helpers import unavailable

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

FENCE = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
CONSOLE = re.compile(r"^```console\n(.*?)^```$", re.MULTILINE | re.DOTALL)
MARK = re.compile(r"<!-- test: (s3|skip (.+?)) -->\n*$")

# Compiles the block with top-level await allowed; a block that awaits runs on asyncio.
RUNNER = """
import ast, asyncio, inspect, sys
source = open(sys.argv[1], encoding="utf-8").read()
code = compile(source, sys.argv[2], "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
namespace = {"__name__": "__main__"}
result = eval(code, namespace)
if inspect.iscoroutine(result):
    asyncio.run(result)
"""


@dataclass
class Block:
    page: Path
    line: int
    source: str
    mark: str | None  # None, "s3" or "skip REASON"

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks() -> list[Block]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            mark = MARK.search(text, max(0, match.start() - 200), match.start())
            found.append(Block(page, line, match.group(1), mark and mark.group(1)))
    return found


BLOCKS = blocks()


def run_python(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, *, strict: bool = True
) -> None:
    """Run Python on `args` in `cwd`; `strict`: Python's warnings are errors, as in the suite."""
    proc = subprocess.run(
        [sys.executable, *(["-W", "error"] if strict else []), *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(cwd), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        pytest.fail(f"exit status {proc.returncode}\n{proc.stdout}{proc.stderr}", pytrace=False)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    pytest.importorskip("s3fs", reason="the s3 extra (fsspec, s3fs) is not installed")
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    from remote.s3server import moto_server

    with moto_server() as url:
        yield url


def s3_fs(endpoint: str):  # type: ignore[no-untyped-def]
    import s3fs

    return s3fs.S3FileSystem(key="testing", secret="testing", skip_instance_cache=True,
                             client_kwargs={"endpoint_url": endpoint})  # fmt: skip


def s3_env(endpoint: str) -> dict[str, str]:

    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    fs = s3_fs(endpoint)
    if fs.exists("bucket"):
        fs.rm("bucket", recursive=True)
    fs.mkdir("bucket")
    return env


def test_every_page_has_examples() -> None:
    """The collection itself works: README.md and docs/ both have blocks."""
    pages = {b.page.name for b in BLOCKS}
    assert "README.md" in pages
    assert len(pages) > 5


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_example_block(block: Block, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    env = None
    if block.mark and block.mark.startswith("skip "):
        pytest.skip(block.mark[5:])
    if block.mark == "s3":
        env = s3_env(request.getfixturevalue("s3_endpoint"))
    script = tmp_path / "example_block.py"
    script.write_text(block.source, encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    run_python(["-c", RUNNER, str(script), block.id], work, env)
    if block.mark == "s3":  # it wrote to the local server, not elsewhere
        assert s3_fs(request.getfixturevalue("s3_endpoint")).ls("bucket")


def console_blocks() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in CONSOLE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{page.relative_to(ROOT)}:{line}", match.group(1)))
    return found


CONSOLES = console_blocks()

# What the console examples start from: the files they name, two stale temps and one of a
# live writer (locked by this test, as a running writer holds it).
CONSOLE_SETUP = {
    "data.txt": "cherry\napple\nb\n",
    "app.conf": "debug = false\n",
    ".data.txt.b5ccb326f583bd61.tmp": "stale\n",
    "sub/.log.txt.81757d27e85676fa.tmp": "stale\n",
}
LIVE_TEMP = ".data.txt.8db86f3c275d657b.tmp"
PRELUDE = """
atomicfile() { "$ATOMICFILE_PYTHON" -m atomicfile "$@"; }
make-secret() { head -c 32 /dev/urandom; }
"""


def normalized(text: str) -> str:
    """The parts that differ from run to run: temp names' random part, durations, sizes."""
    text = re.sub(r"\.[0-9a-f]{16}\.tmp", ".RANDOM.tmp", text)
    text = re.sub(r"(duration|total_duration|size)=[0-9.]+", r"\1=N", text)
    return text


@pytest.mark.parametrize(("where", "block"), CONSOLES, ids=[w for w, _ in CONSOLES])
def test_console_block(where: str, block: str, tmp_path: Path) -> None:
    """Each `$ command` of the block runs (bash, in a directory set up as the examples
    assume) and prints, stdout and stderr together, what the page shows after it."""
    import fcntl

    for name, content in CONSOLE_SETUP.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    live = open(tmp_path / LIVE_TEMP, "w")  # noqa: SIM115 - held for the whole test
    fcntl.flock(live, fcntl.LOCK_EX)
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    try:
        for command, expected in steps:
            proc = subprocess.run(
                ["bash", "-c", PRELUDE + command],
                cwd=tmp_path,
                env={**os.environ, "PYTHONPATH": str(ROOT), "ATOMICFILE_PYTHON": sys.executable},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=60,
            )
            assert normalized(proc.stdout) == normalized("".join(f"{e}\n" for e in expected)), (
                f"$ {command}"
            )
    finally:
        live.close()


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_script(script: Path, tmp_path: Path) -> None:
    """Each script in examples/ runs with no arguments (its files go under TMPDIR)."""
    run_python([str(script)], tmp_path)


class _Links(HTMLParser):
    """The ids and the hrefs of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key == "id" and value:
                self.ids.add(value)
            if key == "href" and value and tag == "a":
                self.hrefs.append(value)


def broken_links(html: Path, pages: dict[Path, str] | None = None) -> list[str]:
    """Every internal link of every page under `html` that leads to no page or to no anchor
    there. `pages` gives a page's HTML as a browser rendered it, where there is one."""
    parsed = {}
    for page in html.rglob("*.html"):
        parser = _Links()
        parser.feed((pages or {}).get(page) or page.read_text(encoding="utf-8"))
        parsed[page] = parser
    broken = []
    for page, parser in parsed.items():
        for href in parser.hrefs:
            url = urlsplit(href)
            if url.scheme or url.netloc or href.startswith("mailto:"):
                continue
            target = (page.parent / unquote(url.path)).resolve() if url.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                if target.suffix in (".html", ""):
                    broken.append(f"{page.relative_to(html)}: {href} (no page)")
                continue
            if url.fragment and target in parsed and url.fragment not in parsed[target].ids:
                broken.append(f"{page.relative_to(html)}: {href} (no anchor)")
    return broken


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docs/ built with Sphinx, warnings as errors (what `tox -e docs` runs)."""
    for module in ("sphinx", "furo", "myst_parser"):
        try:
            __import__(module)
        except ImportError:
            unavailable(f"{module} is not installed: pip install -e '.[test]'")
    out = tmp_path_factory.mktemp("docs")
    run_python(
        ["-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(ROOT / "docs"),
         str(out / "html")],
        out,
        strict=False,  # Sphinx -W makes its warnings errors; its plugins' deprecations are not ours
    )  # fmt: skip
    return out / "html"


def test_docs_build(built_docs: Path) -> None:
    """The site builds, names every public name in the API reference, and has no broken
    internal link or anchor."""
    index = (built_docs / "index.html").read_text(encoding="utf-8")
    api = (built_docs / "api.html").read_text(encoding="utf-8")
    assert "Getting started" in index
    import atomicfile

    for name in atomicfile.__all__:
        assert f'id="atomicfile.{name}"' in api, name
    assert broken_links(built_docs) == []


@pytest.mark.needs("chromium")
def test_docs_in_a_browser(built_docs: Path) -> None:
    """Headless Chromium renders the index and the API reference: no broken internal link or
    anchor in what it rendered, and a screenshot of the index (`screenshot.png`, beside the
    built site) for a person to look at."""
    chromium = shutil.which("chromium")
    assert chromium is not None  # the needs marker ran it
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"]
    rendered = {}
    for name in ("index.html", "api.html"):
        page = built_docs / name
        proc = subprocess.run(
            [*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        assert "atomicfile" in proc.stdout
        rendered[page] = proc.stdout
    assert "AtomicFile" in rendered[built_docs / "api.html"]
    assert broken_links(built_docs, rendered) == []
    shot = built_docs.parent / "screenshot.png"
    subprocess.run(
        [*base, f"--screenshot={shot}", (built_docs / "index.html").as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 10_000


def github_slug(heading: str) -> str:
    """The anchor GitHub (and MyST, as configured) gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_markdown_links() -> None:
    """Every relative link in README.md and docs/*.md leads to a file, and its #anchor to a
    heading there: the links work on GitHub, where the pages are read as Markdown too."""
    def prose(path: Path) -> str:
        text = path.read_text(encoding="utf-8")
        return re.sub(r"^```.*?^```$", "", text, flags=re.MULTILINE | re.DOTALL)

    broken = []
    for page in PAGES:
        text = prose(page)
        for href in re.findall(r"\]\(([^)\s]+)\)", text):
            url = urlsplit(href)
            if url.scheme or href.startswith("mailto:"):
                continue
            target = (page.parent / url.path).resolve() if url.path else page
            if not target.exists():
                broken.append(f"{page.name}: {href}")
                continue
            if url.fragment and target.suffix == ".md":
                headings = re.findall(r"^#{1,6} (.+)$", prose(target), re.MULTILINE)
                if url.fragment not in {github_slug(h) for h in headings}:
                    broken.append(f"{page.name}: {href} (no such heading)")
    assert broken == []
