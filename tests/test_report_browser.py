"""The report as a person sees it: opened from disk in headless Chromium (Debian's build)."""

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from conftest import tiny_raw
from vaekit.config import config_from_dict
from vaekit.train.loop import train
from vaekit.viz.report import build_report, format_metric

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (Debian package 'chromium')", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) not installed")

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
EVAL = {"split": "test", "elbo": -98.7654, "kl": 7.25, "bits_per_dim": 0.181234, "iw_k": 50}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = tmp_path_factory.mktemp("browser") / "run"
    threads = torch.get_num_threads()
    train(config_from_dict(tiny_raw(train={"num_threads": 1})), run, console=Console(quiet=True))
    torch.set_num_threads(threads)
    (run / "eval.json").write_text(json.dumps(EVAL))
    return build_report(run)


def test_report_renders_offline_in_chromium(report):
    requests = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.resolve().as_uri(), wait_until="load")
            images = page.evaluate(
                "() => [...document.images].map(i => "
                "({ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth, alt: i.alt}))"
            )
            cells = page.evaluate(
                "() => Object.fromEntries([...document.querySelectorAll('#metrics td[data-key]')]"
                ".map(td => [td.dataset.key, td.textContent.trim()]))"
            )
            widest = page.evaluate("() => document.documentElement.scrollWidth")
            shot = report.parent / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert len(images) >= 8
    assert all(i["ok"] for i in images), [i["alt"] for i in images if not i["ok"]]
    numeric = {k: v for k, v in EVAL.items() if isinstance(v, int | float)}
    assert cells == {k: format_metric(k, v) for k, v in numeric.items()}
    assert cells["elbo"] == "-98.77" and cells["bits_per_dim"] == "0.1812"
    assert widest <= 1200  # nothing forces sideways scrolling
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    assert shot.stat().st_size > 10_000
