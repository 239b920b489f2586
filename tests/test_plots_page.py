"""The page `dvc plots show` and `dvc plots diff` write, opened in headless Chromium with no network.

The project's template (plots_page/template.html, named in .dvc/config) carries Vega, Vega-Lite and
vega-embed inline; every Vega plot of dvc.yaml must render there. DVC's own page, which loads them
from a CDN, must render none: that shows the browser really is offline and the check can fail.
"""

import csv
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, dvc, git, run
from dvc_render.html import PAGE_HTML

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
    # Every host name fails to resolve, so no script can come from the network, CDN or proxy.
    "--host-resolver-rules=MAP * ~NOTFOUND",
    # Virtual time runs the page's scripts to completion before the DOM is dumped (milliseconds).
    "--virtual-time-budget=15000",
]
# HTML elements without an end tag, which must not stay open on the parser's stack.
VOID_ELEMENTS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class VegaViews(HTMLParser):
    """Count, inside each element with one of the given ids, the Vega views: canvas or svg of class "marks".

    vega-embed also puts an svg icon (its actions menu) beside each chart: a bare svg count would
    count that icon too.
    """

    def __init__(self, ids: list[str]):
        super().__init__()
        self.views = dict.fromkeys(ids, 0)
        self.open: list[tuple[str, str | None]] = []  # (tag, id of the container it is in, if any)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        container = attributes.get("id") if attributes.get("id") in self.views else None
        container = container or (self.open[-1][1] if self.open else None)
        if container and tag in ("canvas", "svg") and "marks" in (attributes.get("class") or "").split():
            self.views[container] += 1
        if tag not in VOID_ELEMENTS:
            self.open.append((tag, container))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.open) - 1, -1, -1):
            if self.open[depth][0] == tag:
                del self.open[depth:]
                return


def vega_plot_count() -> int:
    """The number of Vega plots dvc.yaml declares (a dict with a template; images are plain paths)."""
    return sum(isinstance(plot, dict) for plot in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"])


def rendered_views(page: Path, tmp_path: Path) -> dict[str, int]:
    """Open page in headless Chromium, offline; return the number of Vega views in each plot's container."""
    ids = re.findall(r"vegaEmbed\('#([^']+)'", page.read_text(encoding="utf-8"))
    profile = tmp_path / "chromium-profile"
    dom = run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()], cwd=tmp_path)
    parser = VegaViews(ids)
    parser.feed(dom.stdout)
    return parser.views


def test_plots_show_renders_every_plot_offline(project, tmp_path):
    dvc("plots", "show", "-o", str(tmp_path / "show"), cwd=project)
    page = tmp_path / "show" / "index.html"
    assert "<script src" not in page.read_text(encoding="utf-8")
    views = rendered_views(page, tmp_path)
    assert len(views) == vega_plot_count() > 0
    assert views == dict.fromkeys(views, 1)


def test_plots_diff_of_two_revisions_renders_every_plot_offline(project, tmp_path):
    git("checkout", "-q", "-b", "other", cwd=project)
    confusion = project / "plots" / "confusion.csv"
    rows = list(csv.DictReader(confusion.read_text().splitlines()))
    with confusion.open("w", newline="") as file:  # another revision: the predictions reversed
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "predicted": other["predicted"]} for row, other in zip(rows, reversed(rows)))
    git("commit", "-q", "-am", "other confusion matrix", cwd=project)
    dvc("plots", "diff", "main", "other", "-o", str(tmp_path / "diff"), cwd=project)
    page = tmp_path / "diff" / "index.html"
    text = page.read_text(encoding="utf-8")
    assert re.search(r'"rev": "main"', text) and re.search(r'"rev": "other"', text)
    views = rendered_views(page, tmp_path)
    assert len(views) == vega_plot_count()
    assert views == dict.fromkeys(views, 1)


def test_dvc_default_page_renders_nothing_offline(project, tmp_path):
    """The control: with its CDN scripts unreachable, DVC's own page draws no plot."""
    default_page = tmp_path / "default.html"
    default_page.write_text(PAGE_HTML)
    dvc("plots", "show", "--html-template", str(default_page), "-o", str(tmp_path / "show"), cwd=project)
    views = rendered_views(tmp_path / "show" / "index.html", tmp_path)
    assert len(views) == vega_plot_count()
    assert views == dict.fromkeys(views, 0)
