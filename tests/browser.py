"""Render a results page in headless Chromium (Debian's) and report which images did not load."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

import debian


def images(page: Path) -> dict:
    """{"images": how many <img> the page has, "broken": the src of each that did not load}.

    The page is loaded in an iframe of a small harness page that waits for every image and
    writes what it found into its own DOM, which Chromium then prints."""
    debian.ensure(["chromium"], ["chromium"])
    with tempfile.TemporaryDirectory() as tmp:
        harness = Path(tmp) / "render.html"
        harness.write_text(
            f"""<!DOCTYPE html><html><body>
<iframe id="page" src="{Path(page).resolve().as_uri()}" style="width:1400px;height:2000px"></iframe>
<pre id="out">not rendered</pre>
<script>
document.getElementById("page").onload = () => {{
  const shown = [...document.getElementById("page").contentDocument.images];
  const loaded = shown.map(i => i.complete ? null
    : new Promise(r => {{ i.onload = i.onerror = r; }}));
  Promise.all(loaded).then(() => {{
    const broken = shown.filter(i => !(i.complete && i.naturalWidth > 0))
      .map(i => i.getAttribute("src"));
    document.getElementById("out").textContent = JSON.stringify({{images: shown.length, broken}});
  }});
}};
</script></body></html>"""
        )
        result = subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--allow-file-access-from-files",  # the harness reads the page's images
                "--virtual-time-budget=10000",
                "--dump-dom",
                harness.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
    found = re.search(r'<pre id="out">(.*?)</pre>', result.stdout, re.S)
    assert found, result.stderr[-2000:]
    return json.loads(found.group(1))
