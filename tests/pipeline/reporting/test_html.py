"""report.html: one self-contained page (figures embedded, nothing fetched), a stage table with
each stage's state, cost and main metric; and the quickstart's page in headless Chromium: no
console error, every stage listed with its state, a click on a header reorders the rows."""
from __future__ import annotations

import re
import shutil

from pipeline.core import paths
from pipeline.reporting.html import body_html, stage_rows, write_html
from tests.support.browser import console_errors, keep_artifact
from tests.support.quickstart_runs import finished

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


def test_the_page_embeds_its_figures_and_lists_every_stage(tmp_path):
    results = tmp_path / "results"
    (results / "e" / "train").mkdir(parents=True)
    (results / "e" / "train" / "curves.png").write_bytes(PNG)
    rows = [{"stage": "train", "status": "done", "attempts": 2, "job_id": "41", "wall_s": 7200.0, "device": "cuda",
             "num_devices": 2, "val_acc": 0.771, "test_acc": 0.75},
            {"stage": "evaluate", "status": "failed", "attempts": "", "job_id": "42", "wall_s": None, "cpus": 4}]
    body = "Text.\n\n![curves](e/train/curves.png)\n\n![gone](e/train/missing.png)\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    page = write_html(results, [{"experiment": "e", "rows": rows, "table": "", "body": body}]).read_text()
    assert (results / paths.REPORT_HTML).exists()
    assert 'src="data:image/png;base64,iVBORw0KGgo' in page          # the PNG, embedded
    assert 'src="e/train/missing.png"' in page                      # a missing figure keeps its link
    assert not re.search(r'(src|href)="(https?:)?//', page)         # nothing from a CDN
    assert '<table class="sortable">' in page and '<table class="sortable stages">' in page
    stages = re.findall(r'<tr><td>(\w+)</td><td></td><td class="state-(\w+)">', page)
    assert stages == [("train", "done"), ("evaluate", "failed")]
    assert "{% block" not in page and "<script>" in page


def test_stage_rows_cost_and_main_metric():
    train, evaluate = stage_rows([
        {"stage": "train", "status": "done", "attempts": "2", "wall_s": "7200", "device": "cuda", "num_devices": 2,
         "val_acc": 0.771, "test_acc": 0.75},
        {"stage": "evaluate", "status": "done", "wall_s": 36.0, "cpus": 4}])
    assert (train["gpu_hours"], train["cpu_hours"], train["attempts"]) == (4.0, None, 2.0)
    assert (train["metric"], train["value"]) == ("val_acc", 0.771)     # the first metric column it filled
    assert (evaluate["gpu_hours"], evaluate["cpu_hours"], evaluate["metric"]) == (None, 0.04, "")


def test_markdown_tables_become_sortable_and_text_is_escaped(tmp_path):
    html = body_html(tmp_path, "| x <b> |\n|---|\n| 1 |\n\n<script>alert(1)</script>\n")
    assert '<table class="sortable">' in html and "&lt;b&gt;" in html and "<script>" not in html


def test_the_quickstart_report_in_headless_chromium(tmp_path_factory, tmp_path, chromium):
    from selenium.webdriver.common.by import By
    page = tmp_path / paths.REPORT_HTML              # a copy: the shared run stays as it is
    shutil.copy(finished(tmp_path_factory) / "results" / paths.REPORT_HTML, page)
    console_errors(chromium)                         # (drop what an earlier page logged)
    chromium.get(page.as_uri())
    assert console_errors(chromium) == []
    table = chromium.find_element(By.CSS_SELECTOR, "table.stages")

    def column(i):
        return [r.find_elements(By.TAG_NAME, "td")[i].text for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert list(zip(column(0), column(2))) == [(s, "done") for s in
                                               ("download", "preprocess", "train", "evaluate", "report")]
    images = chromium.find_elements(By.TAG_NAME, "img")
    # the timeline of where the time went, the training curves, the confusion matrix
    assert len(images) == 3 and all(i.get_attribute("src").startswith("data:image/png") for i in images)
    assert "where the time went" in [i.get_attribute("alt") for i in images]
    assert all(chromium.execute_script("return arguments[0].naturalWidth", i) > 100 for i in images)
    wall = table.find_elements(By.TAG_NAME, "th")[5]
    assert wall.text == "wall s"
    before = column(0)
    wall.click()                   # train, the longest stage and third in the DAG, goes last
    walls = list(map(float, column(5)))
    assert walls == sorted(walls) and column(0)[-1] == "train" and column(0) != before
    assert sorted(column(0)) == sorted(before) and wall.get_attribute("aria-sort") == "ascending"
    wall.click()
    walls = list(map(float, column(5)))
    assert walls == sorted(walls, reverse=True) and column(0)[0] == "train"
    assert wall.get_attribute("aria-sort") == "descending"
    assert console_errors(chromium) == []
    chromium.execute_script("console.error('probe')")       # the check above would have seen an error
    assert any("probe" in m for m in console_errors(chromium))
    shot = tmp_path / "report_html.png"
    assert chromium.save_screenshot(str(shot)) and shot.read_bytes()[:8] == PNG[:8]
    keep_artifact(shot)
