"""index.html in a real browser: headless Chromium (Debian's package) renders it offline, every figure and
picture loads, and the page asks for nothing outside its folder. Skips where no Chromium is installed."""
import html
import json
import os
import re
import shutil
import subprocess

import pytest


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


pytestmark = pytest.mark.skipif(_chromium() is None, reason="no Chromium installed (Debian: apt-get install chromium)")

# Loads every figure, then lists what the page loaded, for --dump-dom to print (a copy of the page carries it;
# the report itself has no script).
CHECK = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.map.call(document.images, function (i) {
    return {src: i.currentSrc || i.src, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
            shown: i.clientWidth, gallery: !!i.closest(".gallery")}; });
  var resources = performance.getEntriesByType("resource").map(function (e) { return e.name; });
  var pre = document.createElement("pre"); pre.id = "resdet-check";
  pre.textContent = JSON.stringify({images: images, resources: resources,
                                    scrollWidth: document.documentElement.scrollWidth});
  document.body.appendChild(pre);
});
</script>"""


def _browser(url, tmp_path, *args):
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _page_requests(netlog_path):
    """URLs the page asked the network for (requests the browser makes for itself have no origin)."""
    with open(netlog_path, encoding="utf-8") as f:
        log = json.load(f)
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in log["events"]  # the job's start (its end carries no url)
            if e["type"] == start and "url" in e.get("params", {}) and e["params"].get("initiator") != "not an origin"]


def _check(folder, page, tmp_path):
    """Render a copy of `page` with the CHECK script; returns (what it loaded, the page's network requests)."""
    copy = os.path.join(folder, "_browser_check.html")
    with open(copy, "w", encoding="utf-8") as f:
        f.write(page.replace("</body>", CHECK + "</body>"))
    netlog = tmp_path / "netlog.json"
    proc = _browser("file://" + copy, tmp_path, "--window-size=1366,900", "--virtual-time-budget=15000",
                    f"--log-net-log={netlog}", "--dump-dom")
    os.remove(copy)
    m = re.search(r'<pre id="resdet-check">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"the check did not run: {proc.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1))), _page_requests(netlog)


def test_report_in_chromium(report_case, tmp_path):
    out = str(report_case[3])
    page = open(os.path.join(out, "index.html"), encoding="utf-8").read()
    loaded, requests = _check(out, page, tmp_path)
    srcs = [i["src"] for i in loaded["images"]]
    assert len(srcs) == 16 + 12  # 8 figures and 6 pictures per IoU type
    broken = [i["src"] for i in loaded["images"] if not (i["complete"] and i["width"] > 0)]
    assert not broken, f"figures that did not load: {broken}"
    inside = "file://" + os.path.abspath(out) + "/"
    outside = [u for u in srcs + loaded["resources"] if not u.startswith(inside)]
    assert not outside and not requests, (outside, requests)
    assert loaded["scrollWidth"] <= 1366  # no sideways scrolling on a laptop screen
    pictures = [i for i in loaded["images"] if i["gallery"]]
    assert len(pictures) == 12
    enlarged = [(i["src"], i["width"], i["shown"]) for i in pictures if i["shown"] > i["width"]]
    assert not enlarged, f"pictures shown larger than drawn (their labels grow): {enlarged}"

    shot = tmp_path / "index.png"
    proc = _browser("file://" + os.path.join(out, "index.html"), tmp_path, "--window-size=1366,2400",
                    "--virtual-time-budget=15000", f"--screenshot={shot}")
    assert shot.is_file(), proc.stderr[-2000:]
    import numpy as np
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1366, 2400)
        pixels = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert pixels.std() > 20  # drawn: text, figures (a blank or error page is flat)
    keep = os.environ.get("RESDET_KEEP_SCREENSHOT")
    if keep:  # to look at it
        shutil.copy(shot, keep)


def test_the_check_sees_what_leaves_the_folder(report_case, tmp_path):
    # the same check on a page that reaches out: an image on the network and one beside the folder
    out = str(report_case[3])
    page = open(os.path.join(out, "index.html"), encoding="utf-8").read()
    bad = page.replace("</main>", '<img src="https://example.invalid/x.png"><img src="../outside.png"></main>')
    loaded, requests = _check(out, bad, tmp_path)
    inside = "file://" + os.path.abspath(out) + "/"
    outside = [i["src"] for i in loaded["images"] if not i["src"].startswith(inside)]
    assert "https://example.invalid/x.png" in outside and any(u.endswith("/outside.png") for u in outside)
    assert "https://example.invalid/x.png" in requests
