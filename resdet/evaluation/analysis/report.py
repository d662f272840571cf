"""index.html: the whole analysis on one page, self-contained in its folder.

Plain HTML with an inline style sheet: no script, no font or file from outside the folder (figures/ and
gallery/ beside it, by relative paths), so it opens offline by double-clicking and renders the same in
any browser (tests/evaluation/analysis/test_report_browser.py renders it in headless Chromium). System
fonts, a column of at most 1200 px, tables that scroll inside their box with their header kept in view.
"""
from __future__ import annotations

import html
import os
from typing import Dict, List, Optional

from .error_types import ERROR_TYPES, SPECIAL_TYPES
from .figures import BAND_COLORS, ERROR_COLORS
from .pr_bands import BANDS, DESCRIPTIONS as BAND_DESCRIPTIONS

__all__ = ["write_report", "REPORT_FILE"]

REPORT_FILE = "index.html"

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
       margin: 0; color: #1c2833; background: #fbfcfc; line-height: 1.45; font-size: 15px; }
main { max-width: 1200px; margin: 0 auto; padding: 0 20px 40px; }
header { background: #1b4f72; color: #fff; padding: 14px 20px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; font-size: 13px; opacity: 0.9; word-break: break-all; }
nav { position: sticky; top: 0; background: #eaf2f8; border-bottom: 1px solid #aed6f1; padding: 6px 20px;
      font-size: 14px; z-index: 2; }
nav a { margin-right: 14px; color: #1b4f72; text-decoration: none; white-space: nowrap; }
nav a:hover { text-decoration: underline; }
h2 { margin-top: 34px; border-bottom: 2px solid #d6eaf8; padding-bottom: 4px; font-size: 20px; }
h3 { margin-top: 24px; font-size: 17px; }
img.figure { max-width: 100%; height: auto; border: 1px solid #d5d8dc; background: #fff; display: block; }
details { margin: 8px 0; }
summary { cursor: pointer; color: #1b4f72; font-size: 14.5px; }
.scroll { max-height: 440px; overflow: auto; border: 1px solid #d5d8dc; background: #fff; }
table { border-collapse: collapse; font-size: 13.5px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 9px; border-bottom: 1px solid #eaeded; text-align: right; }
th { background: #f2f4f4; position: sticky; top: 0; z-index: 1; }
td.name, th.name { text-align: left; }
.note { color: #5d6d7e; font-size: 13.5px; }
.warn { color: #922b21; }
pre { background: #f4f6f6; border: 1px solid #d5d8dc; padding: 8px 10px; overflow-x: auto; font-size: 13px; }
dl.defs { display: grid; grid-template-columns: max-content 1fr; gap: 3px 14px; font-size: 14px; }
dl.defs dt { font-weight: 600; }
dl.defs dd { margin: 0; }
.swatch { display: inline-block; width: 12px; height: 12px; border: 1px solid #555; vertical-align: -1px;
          margin-right: 4px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 14px; }
.gallery figure { margin: 0; background: #fff; border: 1px solid #d5d8dc; padding: 6px; }
.gallery img { max-width: 100%; height: auto; display: block; margin: 0 auto; }  /* never enlarged: labels stay 16 px */
.gallery figcaption { font-size: 13px; margin-top: 4px; word-break: break-all; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { background: #fff; border: 1px solid #d5d8dc; padding: 8px 12px; min-width: 110px; }
.card b { font-size: 20px; display: block; }
"""


def _e(v) -> str:
    return html.escape(str(v), quote=True)


def _num(v, fmt: str = "{:.1f}") -> str:
    return "–" if v is None else fmt.format(v)


def _table(header: List[str], rows: List[List[str]], name_cols: int = 1, scroll: bool = True) -> str:
    head = "".join(f'<th class="name">{_e(h)}</th>' if i < name_cols else f"<th>{_e(h)}</th>"
                   for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="name">{c}</td>' if i < name_cols else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    t = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{t}</div>' if scroll else t


def _shade(v: Optional[float], top: float) -> str:
    """A number on a background as strong as its share of `top` (the column's largest)."""
    if v is None:
        return "–"
    a = 0.0 if top <= 0 else min(1.0, max(0.0, v / top)) * 0.55
    return f'<span style="background: rgba(203,67,53,{a:.2f}); padding: 1px 4px">{v:.2f}</span>'


def _img(path: Optional[str], alt: str) -> str:
    if not path:
        return ""
    return f'<img class="figure" src="{_e(path.replace(os.sep, "/"))}" alt="{_e(alt)}">'


def _summary(out: Dict) -> str:
    parts = []
    for t in out["iou_types"]:
        s = out[t]["summary"]
        cards = [("AP", s["AP"]), ("AP50", s["AP50"]), ("AP75", s["AP75"]), ("APs", s["APs"]), ("APm", s["APm"]),
                 ("APl", s["APl"])]
        html_cards = "".join(f'<div class="card">{n}<b>{_num(v)}</b></div>' for n, v in cards)
        counts = (f'{s["images"]} images, {s["objects"]} objects ({s["crowd_regions"]} crowd regions), '
                  f'{s["detections"]} detections')
        if s["detections_beyond_max_dets"]:
            counts += (f'; <span class="warn">{s["detections_beyond_max_dets"]} detections beyond 100 per image and '
                       f'class are not scored (COCO\'s maxDets)</span>')
        parts.append(f"<h3>{_e(t)}</h3><div class=\"cards\">{html_cards}</div><p class=\"note\">{counts}. "
                     f"COCO's AP in percent, computed by the same matching as pycocotools (equal numbers).</p>")
    return "".join(parts)


def _definitions(out: Dict) -> str:
    t = out["iou_types"][0]
    defs = out[t]["error_types"]["definitions"]
    items = "".join(f'<dt><span class="swatch" style="background: rgb{ERROR_COLORS[n]}"></span>{n}</dt>'
                    f"<dd>{_e(defs[n])}</dd>" for n in ERROR_TYPES + SPECIAL_TYPES)
    return (f'<dl class="defs">{items}</dl><p class="note">dAP: how many AP points (at IoU '
            f'{out["settings"]["iou"]:g}) the model would gain if that one kind of error were fixed and nothing '
            "else changed (TIDE, Bolya et al. 2020). The six main types do not add up to 100 - AP; the largest "
            "bar is where to work first.</p>")


def _errors_section(t: str, d: Dict) -> str:
    e = d["error_types"]
    rows = []
    per = e["per_category"]
    tops = {n: max([p["dAP"][n] or 0 for p in per] + [0]) for n in ERROR_TYPES}
    for p in sorted(per, key=lambda p: (p["AP"] is None, p["AP"] if p["AP"] is not None else 0)):
        rows.append([_e(p["category"]), _num(p["AP"])] + [_shade(p["dAP"][n], tops[n]) for n in ERROR_TYPES]
                    + [_num(p["dAP"][n], "{:.2f}") for n in SPECIAL_TYPES]
                    + [str(sum(p["counts"].values()))])
    c = e["counts"]
    counts = ", ".join(f"{n} {c[n]}" for n in ERROR_TYPES)
    return (f'<h3 id="{t}-errors">{t}: error types</h3>' + _img(d.get("figures", {}).get("error_types"),
                                                                  f"{t} error types")
            + f'<p class="note">Number of errors: {counts}. Per category (lowest AP first; the darker, the larger '
              f"that category's dAP compared with the others):</p>"
            + _table(["category", f"AP{int(e['iou'] * 100)}"] + list(ERROR_TYPES) + list(SPECIAL_TYPES) + ["errors"],
                     rows))


def _bands_section(t: str, d: Dict) -> str:
    b = d["pr_bands"]
    legend = "".join(f'<dt><span class="swatch" style="background: {BAND_COLORS[n]}"></span>{n}</dt>'
                     f"<dd>{_e(BAND_DESCRIPTIONS[n])}</dd>" for n in BANDS)
    note = "" if b["sim_computed"] else \
        '<p class="warn">The ground truth\'s categories have no supercategories: Sim is not computed.</p>'
    rows = []
    for p in sorted(b["per_category"], key=lambda p: (p["all"]["C50"] is None, p["all"]["C50"] or 0)):
        rows.append([_e(p["category"])] + [_num(p["all"][n], "{:.3f}") for n in BANDS])
    figs = d.get("figures", {})
    return (f'<h3 id="{t}-bands">{t}: precision-recall, error by error (COCO\'s analyze curves)</h3>'
            f'<dl class="defs">{legend}</dl>'
            '<p class="note">Each band is the AP (area) one kind of error costs: the curve above a band is the '
            "precision-recall curve with that error removed. Numbers in brackets are the areas under each "
            "curve.</p>" + note + _img(figs.get("pr_bands"), f"{t} PR curves by object size")
            + (f"<h4>Per category</h4>" + _img(figs.get("pr_bands_per_category"), f"{t} PR curves per category")
               if figs.get("pr_bands_per_category") else "")
            + "".join(f"<details><summary>Per category, {_e(area)} objects</summary>"
                      + _img(figs[f"pr_bands_per_category_{area}"], f"{t} PR curves per category, {area} objects")
                      + "</details>" for area in ("small", "medium", "large")
                      if figs.get(f"pr_bands_per_category_{area}"))
            + '<p class="note">Areas under each curve per category, all sizes (lowest C50 first; every size is in '
              "analysis.json):</p>" + _table(["category"] + list(BANDS), rows))


def _confusion_section(t: str, d: Dict) -> str:
    c = d["confusion"]
    top = c["top_confusions"]
    rows = [[_e(x["object"]), _e(x["detected_as"]), str(x["count"])] for x in top]
    table = _table(["object's class", "detected as", "count"], rows, name_cols=2, scroll=False) if rows else \
        '<p class="note">No object was detected as another class.</p>'
    m = c["matrix"]
    K = len(c["labels"]) - 1
    fp_bg = sum(m[K][:K])
    missed = sum(row[K] for row in m[:K])
    return (f'<h3 id="{t}-confusion">{t}: confusion matrix</h3>'
            f'<p class="note">One-to-one: each detection ({_e(c["score_note"])}) and each object is counted once, '
            f"at IoU &ge; {c['iou']:g}: first with an object of its class, then with a free object of another "
            f"class, else on background. Rows sum to the objects of a class, columns to its detections. "
            f"{fp_bg} detections on background, {missed} objects missed"
            + (f", {c['ignored_on_crowd']} detections on crowd regions left out" if c["ignored_on_crowd"] else "")
            + ".</p>" + _img(d.get("figures", {}).get("confusion"), f"{t} confusion matrix")
            + "<h4>Most frequent confusions</h4>" + table)


def _thresholds_section(t: str, d: Dict) -> str:
    th = d["thresholds"]
    rows = [[_e(p["category"]), _num(p["threshold"], "{:g}"), _num(p["precision"], "{:.2f}"),
             _num(p["recall"], "{:.2f}"), _num(p["f1"], "{:.2f}"), str(p["objects"])] for p in th["per_category"]]
    o = th["overall"]
    values = th["deploy_line"].split(" ", 1)[1].strip('"')
    yaml = f"TEST:\n  SCORE_THRESH_PER_CLASS: {values}"
    return (f'<h3 id="{t}-thresholds">{t}: precision, recall and F1 against the score threshold</h3>'
            + _img(d.get("figures", {}).get("thresholds"), f"{t} F1 against the score threshold")
            + f'<p class="note">At IoU &ge; {th["iou"]:g}. The best single threshold for all classes is '
              f'{_num(o["threshold"], "{:g}")} (F1 {_num(o["f1"], "{:.2f}")}). Each class\'s own best:</p>'
            + _table(["category", "threshold", "precision", "recall", "F1", "objects"], rows)
            + "<p>To deploy with these thresholds (labels in category-id order; classes without objects or "
              "detections get the best single threshold), add this to the command line of tools/demo.py, "
              "tools/export.py or tools/eval.py:</p>"
            + f"<pre>{_e(th['deploy_line'])}</pre><p>or to the config file:</p><pre>{_e(yaml)}</pre>")


def _gallery_section(t: str, d: Dict, which: str) -> str:
    im = d["images"]
    entries = im[which]
    title = {"worst": "worst images (most errors)", "best": "best images (fewest errors)"}[which]
    head = f'<h3 id="{t}-{which}">{t}: {title}</h3>'
    if not im.get("image_root"):
        return head + ('<p class="note">No image folder was given (--images), so the images are not drawn; '
                       "their names and counts:</p>") + _image_table(entries)
    if not entries:
        return head + '<p class="note">None.</p>'
    legend = (f'<span class="swatch" style="border-color: rgb(39,174,96); border-width: 2px"></span>true positive '
              + " ".join(f'<span class="swatch" style="border-color: rgb{ERROR_COLORS[n]}; border-width: 2px"></span>'
                         f"{n}" for n in ("Cls", "Loc", "Both", "Dupe", "Bkg"))
              + f' <span class="swatch" style="border: 2px dashed rgb{ERROR_COLORS["Miss"]}"></span>missed object')
    figs = []
    for e in entries:
        cap = f"{_e(e['file_name'])}: {e['tp']} found, {e['fp']} false positive(s), {e['fn']} missed"
        if e.get("path"):
            figs.append(f'<figure><img src="{_e(e["path"].replace(os.sep, "/"))}" alt="{_e(e["file_name"])}">'
                        f"<figcaption>{cap}</figcaption></figure>")
        else:
            figs.append(f'<figure><figcaption class="warn">{cap} (could not be read)</figcaption></figure>')
    # found looking at the photos model's report: "Miss 0.00" above and "missed" objects here read as a
    # contradiction unless it says that the error types count every detection and the pictures do not
    return (head + '<p class="note">At the deploy thresholds: only detections scoring at least their class\'s '
            "threshold are drawn, so an object is missed here when none of those found it, even where a "
            "lower-scoring one did (the error types above count every detection, whatever its score). "
            + f'{legend}</p>'
            + f'<div class="gallery">{"".join(figs)}</div>')


def _image_table(entries) -> str:
    rows = [[_e(e["file_name"]), str(e["tp"]), str(e["fp"]), str(e["fn"])] for e in entries]
    return _table(["image", "found", "false positives", "missed"], rows, scroll=False) if rows else ""


def write_report(out: Dict, output_dir: str) -> str:
    """index.html in `output_dir` from analyze_results' numbers (figures already written there)."""
    types = out["iou_types"]
    nav = ['<a href="#summary">Summary</a>', '<a href="#how">How to read</a>']
    sections = []
    for t in types:
        nav += [f'<a href="#{t}-errors">{t}: errors</a>', f'<a href="#{t}-bands">PR bands</a>',
                f'<a href="#{t}-confusion">confusion</a>', f'<a href="#{t}-thresholds">thresholds</a>',
                f'<a href="#{t}-worst">worst</a>', f'<a href="#{t}-best">best</a>']
        d = out[t]
        sections.append(f'<h2 id="{t}">{t}</h2>' + _errors_section(t, d) + _bands_section(t, d)
                        + _confusion_section(t, d) + _thresholds_section(t, d)
                        + _gallery_section(t, d, "worst") + _gallery_section(t, d, "best"))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>resdet analysis: {_e(os.path.basename(out['results']))}</title>
<style>{STYLE}</style></head>
<body>
<header><h1>Why the AP is what it is</h1>
<p>results {_e(out['results'])} &middot; ground truth {_e(out['ground_truth'])}</p></header>
<nav>{' '.join(nav)}</nav>
<main>
<h2 id="summary">Summary</h2>{_summary(out)}
<h2 id="how">How to read the error types</h2>{_definitions(out)}
{''.join(sections)}
<p class="note">Every number on this page, and more (per size, per image), is in analysis.json beside it.</p>
</main></body></html>
"""
    path = os.path.join(output_dir, REPORT_FILE)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
