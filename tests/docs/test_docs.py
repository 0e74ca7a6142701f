"""The manual (mkdocs.yml, docs/) is checked, not hoped: it builds with ``mkdocs build --strict``, its runnable
examples run on the sample, its output tables match what the commands write, the README holds nothing it lacks,
and the built site renders with its navigation in headless Chromium.

A runnable example is a fenced ``bash`` or ``python`` block right below the line ``<!-- runnable -->`` (or
``<!-- runnable needs=module,... -->``: skipped with the reason where a module is missing). All of them run in
the order of the nav, in one folder holding links to the checkout's datasets/, configs/ and models/, so a block
may use what an earlier one wrote (docs/contributing.md, "Runnable examples").
"""
from __future__ import annotations

import csv
import functools
import http.server
import importlib.util
import os
import re
import shutil
import socketserver
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

import cv2
import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_LINES = 150
RUNNABLE = re.compile(r"^<!-- runnable(?: needs=([\w.,]+))? -->\n```(bash|python)\n(.*?)^```$", re.M | re.S)
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```$", re.M | re.S)
LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
# mkdocs' plugins print a notice about MkDocs 2 on every run; these silence it (the Makefile sets them too)
QUIET = {"NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1280,1000"]


class Block(NamedTuple):
    page: str
    language: str
    code: str
    needs: Tuple[str, ...]


def nav_pages() -> List[str]:
    """The pages of mkdocs.yml's nav, in order."""
    def walk(entries) -> Iterator[str]:
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            yield from walk(value) if isinstance(value, list) else [value]
    return list(walk(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]))


def runnable_blocks(page: str) -> List[Block]:
    path = DOCS / page
    if not path.is_file():  # generated at build time (the model cards): no runnable blocks
        return []
    return [Block(page, language, code, tuple(filter(None, (needs or "").split(","))))
            for needs, language, code in RUNNABLE.findall(path.read_text(encoding="utf-8"))]


PAGES_WITH_EXAMPLES = [page for page in nav_pages() if runnable_blocks(page)]


# --- the build -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The manual built once per session, with --strict: any warning (broken link or anchor, page outside the nav,
    an API reference that does not resolve) fails the build."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                             "-d", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=240,
                            env={**os.environ, **QUIET})
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return out


def test_the_manual_builds_strictly_with_every_nav_page(site):
    for page in nav_pages():
        stem = page[:-len(".md")]
        built = site / (stem[:-len("index")] if stem.endswith("index") else stem + "/") / "index.html"
        assert built.is_file(), f"{page} was not built"
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    from lumbarseg.cli import COMMAND_MODULES

    for command in COMMAND_MODULES:  # generated from the parsers: every command has its section
        assert f"lumbarseg {command}" in cli, command
    assert "--max-slice-pixels" in cli and "ROW,COL[,SLICE]" in cli
    api = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    assert "Segment one volume" in api and "predict_folder" in api


# --- the README: a front door that holds nothing the manual lacks ----------------------------------------------------

def plain(text: str) -> str:
    """Text with links reduced to their words and whitespace to single spaces."""
    return " ".join(LINK.sub(r"\1", text).split())


def test_readme_is_short_and_holds_nothing_the_manual_lacks():
    readme = README.read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_MAX_LINES
    manual = [p.read_text(encoding="utf-8") for p in sorted(DOCS.rglob("*.md"))]
    manual += [(ROOT / "models" / card).read_text(encoding="utf-8") for card in os.listdir(ROOT / "models")
               if card.endswith(".md")]
    blocks = {block for page in manual for block in FENCE.findall(page)}
    for block in FENCE.findall(readme):
        assert block in blocks, f"README code block not in the manual:\n{block}"
    text = plain(" ".join(manual))
    prose = FENCE.sub("", readme).split("\n## The manual\n")[0] + readme.split("\n## Data credit")[1]
    for line in prose.splitlines():
        words = plain(line)
        if words and not line.startswith(("#", "<!--", "|---")) and words.strip("| "):
            cells = [c.strip() for c in words.split("|")] if line.startswith("|") else [words]
            for piece in filter(None, cells):
                assert piece in text, f"README text not in the manual: {piece!r}"
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).is_file() and target[len("docs/"):] in nav_pages(), target


# --- the runnable examples -------------------------------------------------------------------------------------------

class Workspace:
    """One folder where the manual's runnable blocks run in nav order, each page's once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for name in ("datasets", "configs", "models"):
            (root / name).symlink_to(ROOT / name, target_is_directory=True)
        self.done: Dict[str, Optional[str]] = {}  # page -> None (ran) or why it failed
        self.skipped: List[str] = []  # "page block N: needs MODULE" for blocks whose modules are missing

    def run_through(self, page: str) -> None:
        """Run every page's blocks up to and including ``page`` (those not run yet), then fail or skip for it."""
        for earlier in PAGES_WITH_EXAMPLES[:PAGES_WITH_EXAMPLES.index(page) + 1]:
            if earlier not in self.done:
                self.done[earlier] = self._run_page(earlier)
        failed = [f"{p}: {why}" for p, why in self.done.items() if why and p != page]
        if self.done[page]:
            pytest.fail(self.done[page] + (f"\n(earlier pages failed too: {failed})" if failed else ""))

    def _run_page(self, page: str) -> Optional[str]:
        env = {**os.environ, **QUIET, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1"}
        for number, block in enumerate(runnable_blocks(page), 1):
            missing = [m for m in block.needs if importlib.util.find_spec(m) is None]
            if missing:
                self.skipped.append(f"{page} block {number}: needs {', '.join(missing)}")
                continue
            command = (["bash", "-euo", "pipefail", "-c", block.code] if block.language == "bash"
                       else [sys.executable, "-c", block.code])
            result = subprocess.run(command, cwd=self.root, env=env, capture_output=True, text=True, timeout=300)
            if result.returncode:
                return (f"{page}, runnable block {number} ({block.language}) exited {result.returncode}:\n"
                        f"{block.code}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}")
        return None


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("manual"))


@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES)
def test_runnable_examples_run_on_the_sample(workspace, page):
    workspace.run_through(page)
    skipped = [s for s in workspace.skipped if s.startswith(page + " ")]
    if skipped:
        pytest.skip("; ".join(skipped))


def test_runnable_examples_cover_the_cheap_jobs():
    code = "\n".join(b.code for page in PAGES_WITH_EXAMPLES for b in runnable_blocks(page))
    for job in ("lumbarseg predict", "lumbarseg measure", "lumbarseg evaluate", "lumbarseg dataset from-volumes",
                "lumbarseg train", "lumbarseg export", "onnxruntime", "cv2.dnn.readNetFromONNX",
                "eddl.import_net_from_onnx_file"):
        assert job in code, job


def documented_columns(name: str) -> List[str]:
    """The first column of the table under ``### NAME`` in reference/outputs.md."""
    page = (DOCS / "reference" / "outputs.md").read_text(encoding="utf-8")
    section = page.split(f"\n### {name}\n", 1)[1].split("\n#", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", section, re.M)


@pytest.mark.parametrize("name, written", [
    ("measurements.csv", "build/demo/spider161_seg_measurements.csv"),
    ("spine.csv", "build/demo/spider161_seg_spine.csv"),
    ("metrics.csv", "build/demo/report/metrics.csv"),
    ("levels.csv", "build/demo/report/levels.csv"),
])
def test_output_reference_lists_the_columns_written(workspace, name, written):
    workspace.run_through("getting-started/first-prediction.md")
    with open(workspace.root / written, newline="") as handle:
        assert next(csv.reader(handle)) == documented_columns(name)


# --- the built site in headless Chromium -----------------------------------------------------------------------------

def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/install-chromium does it in CI)")


@pytest.fixture(scope="module")
def served(site) -> Iterator[str]:
    """The built site on an ephemeral port of 127.0.0.1."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None  # type: ignore[assignment]
    with socketserver.TCPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_address[1]}"
        server.shutdown()


def browse(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("page, heading", [("", "lumbarseg"), ("reference/cli/", "Command line")])
def test_site_renders_with_its_navigation_in_headless_chromium(served, tmp_path, page, heading):
    dom = browse(f"{served}/{page}", tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    nav = re.findall(r'<label class="md-nav__link"[^>]*>.*?<span class="md-ellipsis">\s*([^<]+?)\s*</span>',
                     dom.stdout, re.S)
    for section in ("Getting started", "Guides", "Reference", "Models"):
        assert section in nav, (section, nav)
    assert re.search(rf"<h1[^>]*>\s*{heading}\b", dom.stdout), f"no heading {heading!r}"
    assert re.search(r'<a href="[^"]*api/" class="md-nav__link">\s*<span class="md-ellipsis">\s*Python API',
                     dom.stdout), "no link to the Python API in the navigation"
    shot = tmp_path / "page.png"
    result = browse(f"{served}/{page}", tmp_path / "profile-shot", f"--screenshot={shot}")
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = cv2.imread(str(shot), cv2.IMREAD_GRAYSCALE)
    assert pixels is not None and pixels.shape == (1000, 1280)
    assert pixels.std() > 20, "the screenshot is blank"
    sidebar, header = pixels[100:900, 0:300], pixels[0:48]
    assert (sidebar < 128).mean() > 0.005, "no navigation drawn in the left sidebar"
    assert np.median(header) < 200, "no coloured header bar"
    keep = os.environ.get("LUMBARSEG_DOCS_SCREENSHOTS")  # a folder to keep the screenshots in, to look at them
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / f"{page.strip('/').replace('/', '-') or 'home'}.png")
