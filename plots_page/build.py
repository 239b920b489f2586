"""Build the page template that `dvc plots show` and `dvc plots diff` fill, for use with no network.

DVC's own page loads Vega, Vega-Lite and vega-embed from a CDN, so offline its plots stay blank.
This script takes the same three browser bundles from pinned npm packages (the major versions DVC's
page loads: vega 5, vega-lite 5, vega-embed 6) and writes them inline into
`plots_page/template.html`, which `.dvc/config` names as `plots.html_template` (a path DVC reads
relative to the .dvc directory: `../plots_page/template.html`). It also writes
`plots_page/LICENSES.txt`: the licence of every package whose code the bundles hold, found through
the bundles' source maps. Both files are committed; run this only to change a version (needs npm):

    python plots_page/build.py
"""

import hashlib
import json
import re
import subprocess
import tempfile
from pathlib import Path

from fashion_shap.files import atomic_path
from fashion_shap.params import PipelineError, run

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "template.html"
LICENSES = HERE / "LICENSES.txt"

# In load order: vega-lite needs the global `vega`, vega-embed needs `vega` and `vegaLite`.
PACKAGES = {"vega": "5.33.1", "vega-lite": "5.23.0", "vega-embed": "6.29.0"}

# dvc_render's page (dvc_render/html.py) with the scripts inlined instead of its {scripts}
# placeholder, which DVC would fill with the CDN's <script src=...> tags. dvc_render fills
# {refresh_tag} and {plot_divs} by plain replacement, so the braces of CSS and JS are safe here.
PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- {provenance} -->
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""
DVC_PLACEHOLDERS = ("{plot_divs}", "{refresh_tag}", "{scripts}")
SOURCE_MAP_LINE = re.compile(r"\n?//# sourceMappingURL=\S+\s*$")


def npm_install(directory: Path) -> Path:
    """Install the pinned packages and their dependencies into directory; return its node_modules."""
    specs = [f"{name}@{version}" for name, version in PACKAGES.items()]
    command = ["npm", "install", "--prefix", str(directory), "--no-save", "--ignore-scripts", "--no-audit",
               "--no-fund", "--omit=dev", "--omit=peer", *specs]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise PipelineError("npm not found; install Node.js and npm (Debian: apt-get install npm)") from None
    except subprocess.CalledProcessError as error:
        raise PipelineError(f"npm install {' '.join(specs)} failed: {error.stderr.strip()}") from None
    return directory / "node_modules"


def browser_bundle(package: Path) -> Path:
    """Return the minified bundle a CDN serves for package (its package.json's "jsdelivr" field)."""
    manifest = json.loads((package / "package.json").read_text())
    return package / manifest["jsdelivr"]


def inline_script(bundle: Path) -> str:
    """Return bundle's code without its source map comment, checked safe to put in a <script>."""
    code = SOURCE_MAP_LINE.sub("", bundle.read_text(encoding="utf-8"))
    if "</script" in code.lower():
        raise PipelineError(f"{bundle} contains '</script', which would end an inline script")
    found = [placeholder for placeholder in DVC_PLACEHOLDERS if placeholder in code]
    if found:
        raise PipelineError(f"{bundle} contains {found}, which DVC would replace")
    return code


def bundled_package(source: str, own_name: str) -> str:
    """Return the npm package a source-map entry belongs to.

    Entries look like "../node_modules/semver/x.js" (a dependency), "../src/x.ts" or "../index.js"
    (the package itself) and, in Vega's monorepo, "../../vega-util/src/x.js" (a sibling package).
    """
    if "node_modules/" in source:
        parts = source.rsplit("node_modules/", 1)[1].split("/")
        return "/".join(parts[:2]) if parts[0].startswith("@") else parts[0]
    first = next(part for part in source.split("/") if part not in ("", ".", ".."))
    return own_name if first == "src" or "." in first else first


def bundled_packages(node_modules: Path) -> list[str]:
    """Return the names of all packages whose code the three bundles hold, sorted."""
    names = set()
    for name in PACKAGES:
        source_map = browser_bundle(node_modules / name).with_suffix(".js.map")
        sources = json.loads(source_map.read_text())["sources"]
        names.update(bundled_package(source, name) for source in sources)
    return sorted(names)


def licence_file(package: Path) -> Path | None:
    """Return the package's LICENSE (or LICENCE, LICENSE.md, ...) file, if it ships one."""
    files = sorted(package.iterdir())
    return next((path for path in files if re.match(r"licen[cs]e", path.name, re.IGNORECASE)), None)


def repository(package: Path) -> str:
    """Return a package's repository as "owner/name", to match packages of one monorepo."""
    value = json.loads((package / "package.json").read_text()).get("repository", "")
    url = value.get("url", "") if isinstance(value, dict) else value
    return re.sub(r"^.*github\.com[/:]|^github:|\.git$", "", url)


def licence_texts(node_modules: Path, names: list[str]) -> dict[str, str]:
    """Return each package's licence text, headed by its name, version and licence id.

    Several of Vega's own packages ship no licence file; they take the one another package of the
    same repository ships (the Vega monorepo has one LICENSE for all of them).
    """
    packages = {name: node_modules / name for name in names}
    missing = [name for name, package in packages.items() if not package.is_dir()]
    if missing:
        raise PipelineError(f"bundled packages not installed by npm: {', '.join(missing)}")
    shipped = {name: licence_file(package) for name, package in packages.items()}
    by_repository = {repository(packages[name]): path for name, path in shipped.items() if path}
    by_repository.pop("", None)  # packages that name no repository share nothing
    texts = {}
    for name, package in packages.items():
        path = shipped[name] or by_repository.get(repository(package))
        if path is None:
            raise PipelineError(f"no licence text found for the bundled package {name}")
        manifest = json.loads((package / "package.json").read_text())
        texts[name] = f"{name} {manifest['version']} ({manifest.get('license')})\n\n{path.read_text().strip()}\n"
    return texts


def provenance(node_modules: Path) -> str:
    """Return the HTML comment's text: what is inlined, from where, with the bundles' SHA-256."""
    lines = ["Built by plots_page/build.py; licences in plots_page/LICENSES.txt. Inlined, in order:"]
    for name, version in PACKAGES.items():
        bundle = browser_bundle(node_modules / name)
        digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
        lines.append(f"{name}@{version} {bundle.relative_to(node_modules / name)} sha256 {digest}")
    return "\n         ".join(lines)


def page(node_modules: Path) -> str:
    scripts = "\n".join(
        f"    <script>\n{inline_script(browser_bundle(node_modules / name))}\n    </script>" for name in PACKAGES
    )
    return PAGE.format(provenance=provenance(node_modules), scripts=scripts, refresh_tag="{refresh_tag}",
                       plot_divs="{plot_divs}")


def licences(node_modules: Path) -> str:
    header = (
        "Licences of the code inlined in plots_page/template.html: Vega, Vega-Lite, vega-embed and the\n"
        "packages their browser bundles include (read from the bundles' source maps). Versions are those\n"
        "npm installed beside the pinned packages when plots_page/build.py last ran.\n"
    )
    texts = licence_texts(node_modules, bundled_packages(node_modules))
    return header + "".join(f"\n{'=' * 100}\n{text}" for text in texts.values())


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        node_modules = npm_install(Path(directory))
        template, licence_text = page(node_modules), licences(node_modules)
    for path, text in ((TEMPLATE, template), (LICENSES, licence_text)):
        with atomic_path(path) as temporary:
            temporary.write_text(text, encoding="utf-8")
        print(f"wrote {path} ({len(text.encode()):,} bytes)")


if __name__ == "__main__":
    run(main)
