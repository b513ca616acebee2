"""The run report: its pieces on hand-made inputs (quick), and the whole report of a tiny
real pipeline run, first without then with a baseline model (slow: two runs).

The report's numbers are checked against the Evaluator's own results (TFMA, read with
``metrics.read_metrics``), its figures are opened, the page is checked to be self-contained,
and, where a Chromium is installed, rendered headless."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from PIL import Image
from test_pipeline import _tiny  # the tiny configuration of the pipeline's own end-to-end test

from stellarpop.pipeline import local_runner
from stellarpop.pipeline.evaluation import eval_config, metrics
from stellarpop.pipeline.report import figures as figs
from stellarpop.pipeline.report import run_report as report
from stellarpop.pipeline.report import tables
from stellarpop.schema import features as F
from stellarpop.transforms import preprocessing as P

DOCS = Path(__file__).resolve().parents[2] / "docs"
SHIPPED_INFO = DOCS.parent / "serving" / "models" / "default" / "7" / "assets.extra" / "model_info.json"
BROWSERS = ("chromium", "chromium-browser", "chromium-headless-shell", "google-chrome", "google-chrome-stable")


class _Page(HTMLParser):
    """Every tag's attributes, by tag, and the text of each section (by its id)."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: dict[str, list[dict]] = {}
        self.sections: dict[str, str] = {}
        self._section = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.setdefault(tag, []).append(dict(attrs))
        if tag == "section":
            self._section = dict(attrs)["id"]
            self.sections[self._section] = ""

    def handle_data(self, data):
        if self._section:
            self.sections[self._section] += data + "|"


def _rows(section_html: str) -> list[list[str]]:
    """The cells of every table row of a piece of the page."""
    return [
        [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", section_html)
    ]


def _section_html(page: str, anchor: str) -> str:
    return page.split(f'<section id="{anchor}">', 1)[1].split("</section>", 1)[0]


# --- Pieces (no pipeline run) -----------------------------------------------------------------
def test_threshold_checks_name_what_passed_and_failed():
    config = eval_config.make_eval_config(dict(zip(F.LABEL_KEYS, F.TRUTH_KEYS)), thresholds={"vd": 30.0})
    cand = {(): {metrics.metric_name("clipped_std", k): v for k, v in zip(F.LABEL_KEYS, (0.1, 0.12, 0.02, 35.0))}}
    base = {(): {metrics.metric_name("clipped_std", k): v for k, v in zip(F.LABEL_KEYS, (0.12, 0.1, 0.02, 33.0))}}
    validation = tfma.ValidationResult(validation_ok=False)
    failure = validation.metric_validations_per_slice.add().failures.add()
    failure.metric_key.CopyFrom(metrics.metric_key("clipped_std", "vd", "candidate").to_proto())
    failure.message = "35 > 30"
    failure = validation.metric_validations_per_slice[0].failures.add()
    failure.metric_key.CopyFrom(metrics.metric_key("clipped_std", "mh", "candidate", is_diff=True).to_proto())
    checks = report.threshold_checks(report.Evaluation(cand, base, config, validation))
    by = {(c["output"], c["kind"]): c for c in checks}
    assert len(checks) == 8 and all(c["metric"] == "clipped_std_residual" for c in checks)
    assert not by["vd", "value"]["passed"] and by["vd", "value"]["message"] == "35 > 30"
    assert by["vd", "value"]["bound"] == "<= 30" and by["vd", "value"]["value"] == 35.0
    assert not by["mh", "change"]["passed"] and by["mh", "change"]["value"] == pytest.approx(0.02)
    assert by["log_age", "change"]["passed"] and by["log_age", "change"]["value"] == pytest.approx(-0.02)
    assert [c["output"] for c in checks if not c["passed"]] == ["mh", "vd"]
    html = tables.blessing_section(report.RunArtifacts("r", "e", "b", False, "m", "x", "base"), checks, validation)
    assert "NOT BLESSED" in html and "6 of 8 thresholds passed" in html and "35 &gt; 30" in html


@pytest.mark.parametrize(
    "feature, edges, closed_last", [(P.SNR_BIN_XF, F.SNR_BIN_EDGES, False), (P.Z_BIN_XF, F.Z_BIN_EDGES, True)]
)
def test_bin_labels_bracket_the_values_transform_puts_in_them(feature, edges, closed_last):
    values = np.array([edges[0] - 1.0, *edges, *(np.asarray(edges[1:]) - 1e-3), edges[-1] + 1.0], np.float32)
    bins = P.bucketize(tf.constant(values), edges, closed_last=closed_last).numpy()
    for value, index in zip(values, bins):
        label = tables.bin_label(feature, index)
        if label.startswith(("<", ">")):  # compared in float32, as Transform compares
            op, edge = label.split(" ")
            edge = np.float32(edge)
            assert {"<": value < edge, ">": value > edge, ">=": value >= edge}[op], (value, label)
        else:
            low, high = map(np.float32, label.split("-"))
            assert low <= value <= high, (value, label)
    assert tables.bin_label(F.BPT_CLASS, "") == "unknown" and tables.bin_label(F.BPT_CLASS, b"AGN") == "AGN"


def test_density_figure_writes_the_clipped_statistics():
    rng = np.random.default_rng(1)
    labels = {k: rng.uniform(0, 1, 500) for k in F.LABEL_KEYS}
    preds = {k: v + rng.normal(0.1, 0.05, v.size) for k, v in labels.items()}
    preds[F.LOG_AGE][:5] = np.nan  # left out
    fig = figs.density_figure(labels, preds)
    for ax, key in zip(fig.axes, F.LABEL_KEYS):
        text = ax.texts[0].get_text()
        ok = np.isfinite(preds[key])
        mean, std, _ = metrics.sigma_clipped_mean_std(preds[key][ok] - labels[key][ok])
        assert f"mean {mean:+.{figs.DECIMALS[key]}f}" in text and f"sigma {std:.{figs.DECIMALS[key]}f}" in text
        assert f"N {ok.sum()}" in text


def test_benchmark_tables_of_both_benchmarks(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    other = tmp_path / "speed.json"
    other.write_text(json.dumps({"spectra_per_s": 2500.0, "nested": {"batch": 512}}))
    real, truth = DOCS / "default_model_real_sdss.json", DOCS / "default_model_metrics.json"
    html = tables.benchmark_section([str(real), str(truth), str(broken), str(other)])
    data = json.loads(real.read_text())
    assert f"{data['vd_minus_vdisp']['net']['rms']:.1f}" in html
    assert f"{data['net_minus_ppxf']['log_age']['clipped_std']:.4f}" in html
    assert all(r["spec_id"] in html for r in data["rows"])
    metrics_json = json.loads(truth.read_text())
    assert f"{metrics_json['table']['all']['vd'][1]:.2f}" in html and "S/N 5-10" in html
    assert "unreadable" in html and "nested.batch" in html and "2500" in html
    assert "No benchmark results" in tables.benchmark_section([])


def test_page_is_self_contained_and_escapes_run_text(tmp_path):
    section = tables.section("a", "A <b>", tables.table(("x",), [("<script>alert(1)</script>",)]))
    page = tables.page("run at /tmp/<odd>", [section])
    parsed = _Page(page)
    assert "script" not in parsed.tags and "link" not in parsed.tags and "&lt;script&gt;" in page
    assert [a["href"] for a in parsed.tags["a"]] == ["#a"]


def test_artefact_paths_follow_a_moved_run_root(tmp_path):
    moved = tmp_path / "new"
    (moved / "artifacts" / "Trainer" / "model" / "7").mkdir(parents=True)
    old = "/gone/run/artifacts/Trainer/model/7"
    assert report._local(old, str(moved)) == str(moved / "artifacts" / "Trainer" / "model" / "7")
    assert report._local("/gone/elsewhere", str(moved)) == "/gone/elsewhere"


def test_model_section_reads_as_a_model_card(tmp_path):
    """What the model is, what it was trained on, figures by kind of galaxy, calibration, and
    the metadata folded away; paths relative to the run folder, none of this machine's."""
    info = json.loads((SHIPPED_INFO).read_text())
    root = tmp_path / "my-run"
    run = report.RunArtifacts(
        str(root),
        "e",
        "b",
        True,
        str(root / "artifacts" / "Trainer" / "model" / "7"),
        str(root / "artifacts" / "Transform" / "examples" / "3"),
    )
    by_kind = {
        ((F.BPT_CLASS, c),): {
            metrics.metric_name("example_count", F.LOG_AGE): 10.0 + i,
            **{metrics.metric_name("clipped_std", k): 0.1 * (i + 1) for k in F.LABEL_KEYS},
            **{metrics.metric_name("coverage68", k): 0.68 for k in F.LABEL_KEYS},
        }
        for i, c in enumerate(("passive", "star-forming"))
    }
    evaluation = report.Evaluation(
        by_kind,
        {},
        eval_config.make_eval_config(dict(zip(F.LABEL_KEYS, F.TRUTH_KEYS))),
        tfma.ValidationResult(validation_ok=True),
    )
    html = tables.model_section(run, info, evaluation)
    assert "By kind of galaxy" in html and "Calibration" in html and "<details>" in html
    rows = {r[0]: r for r in _rows(html.split("<details>")[0]) if r}
    assert rows["passive"][1] == "10" and rows["star-forming"][2].endswith("/ 0.2000")
    assert rows["vd"][1] == f"{info['calibration']['interval_scale']['vd']:.3f}"
    assert "RUN/artifacts/Trainer/model/7" in html and str(tmp_path) not in html
    assert "truth</b> labels" in html and "default</b> network" in html
    folded = html.split("<details>")[1]
    assert "calibration.ood_threshold" in folded and "wavelength_grid.n_pixels" in folded


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(report.ReportError, match="metadata.sqlite"):
        report.write_report(str(tmp_path), str(tmp_path / "out"))
    assert not (tmp_path / "metadata.sqlite").exists()  # opened read-only: nothing created


# --- The report of a tiny pipeline run --------------------------------------------------------
@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Two runs of one tiny pipeline in one root (the second evaluates against the first's
    blessed model) and a report after each: {"first": (cfg, index.html), "second": ...}."""
    root = tmp_path_factory.mktemp("run")
    cfg = _tiny(str(root))
    bench = root / "benchmarks"
    bench.mkdir()
    shutil.copy(DOCS / "default_model_real_sdss.json", bench / "real_sdss.json")
    out = {}
    for name in ("first", "second"):
        cfg = local_runner.run(cfg, beam_pipeline_args=["--runner=DirectRunner"])
        out[name] = (
            cfg,
            report.write_report(
                cfg.root,
                str(tmp_path_factory.mktemp(f"report-{name}")),
                benchmarks=[str(DOCS / "default_model_metrics.json")],
            ),
        )
    return out


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("which", ["first", "second"])
def test_report_of_a_run(reports, which):
    cfg, index = reports[which]
    page = Path(index).read_text()
    parsed = _Page(page)
    assert Path(index).name == "index.html"
    images = [img["src"] for img in parsed.tags["img"]]
    assert {
        "loss_curve.png",
        "pred_vs_label.png",
        "slices_snr.png",
        "slices_z.png",
        "slices_bpt.png",
        "zscores.png",
    } == set(images)
    for src in images:
        with Image.open(Path(index).parent / src) as im:
            assert im.format == "PNG" and im.size[0] > 300
    links = [a.get("href", "") for a in parsed.tags.get("a", [])] + images
    assert not any("http" in link for link in links) and "script" not in parsed.tags and "link" not in parsed.tags
    assert "BLESSED" in parsed.sections["blessing"] and "NOT BLESSED" not in parsed.sections["blessing"]
    assert "Pushed as version" in parsed.sections["blessing"]
    checks = _rows(_section_html(page, "blessing"))[1:]
    assert len(checks) == (4 if which == "first" else 8) and all(row[5] == "passed" for row in checks)
    assert ("No blessed baseline" in page) == (which == "first")
    model = parsed.sections["model"]
    assert "By kind of galaxy" in model and "Calibration" in model and "<details>" in _section_html(page, "model")
    assert cfg.root not in page and os.path.abspath(cfg.root) not in page  # paths relative to the run


@pytest.mark.slow
@pytest.mark.e2e
def test_report_numbers_are_the_evaluators(reports):
    cfg, index = reports["second"]
    page = Path(index).read_text()
    run = report.find_run(cfg.root)
    assert run.blessed and run.baseline_model and run.pushed["pushed"] == 1 and os.path.isdir(run.model_run)
    evaluation = report.read_evaluation(run.evaluation)
    overall = evaluation.candidate[()]
    rows = {r[0]: r for r in _rows(_section_html(page, "accuracy"))[1:]}
    for key in F.LABEL_KEYS:
        d = figs.DECIMALS[key] + 1
        assert rows[key][1] == F.TRUTH_PREFIX + key  # the labels of a truth run
        assert rows[key][4] == f"{overall[metrics.metric_name('clipped_std', key)]:.{d}f}"
        assert rows[key][8] == f"{evaluation.baseline[()][metrics.metric_name('clipped_std', key)]:.{d}f}"
    for feature, anchor in ((P.SNR_BIN_XF, "slices-snr"), (P.Z_BIN_XF, "slices-z"), (F.BPT_CLASS, "slices-bpt")):
        table = {r[0]: r for r in _rows(_section_html(page, anchor))[1:]}
        values = tables.slice_values(evaluation.candidate, feature)
        assert values and list(table) == [tables.bin_label(feature, v) for v in values]
        for value in values:
            stats = evaluation.candidate[((feature, value),)]
            row = table[tables.bin_label(feature, value)]
            assert row[1] == f"{stats[metrics.metric_name('example_count', F.LOG_AGE)]:.0f}"
            assert (
                row[2] == f"{stats[metrics.metric_name('clipped_mean', F.LOG_AGE)]:+.4f} / "
                f"{stats[metrics.metric_name('clipped_std', F.LOG_AGE)]:.4f}"
            )
    # The test split (< 5000 examples) run again through the exported model gives the
    # Evaluator's statistics: same examples, same labels, same model.
    predictions = report.predict_test_split(
        os.path.join(run.model, report.SERVING_DIR), run.examples, evaluation.label_keys
    )
    stats = report.example_statistics(predictions)
    for key in F.LABEL_KEYS:
        assert stats[key]["n"] == overall[metrics.metric_name("example_count", key)]
        assert stats[key]["clipped_std"] == pytest.approx(overall[metrics.metric_name("clipped_std", key)], rel=1e-4)
        assert stats[key]["coverage68"] == pytest.approx(overall[metrics.metric_name("coverage68", key)])
    few = report.predict_test_split(
        os.path.join(run.model, report.SERVING_DIR), run.examples, evaluation.label_keys, max_examples=4, batch_size=3
    )
    assert len(few[F.Z]) == 4 and np.all(np.isfinite(few["pred/vd"]))
    benchmarks = _Page(page).sections["benchmarks"]
    assert "real_sdss.json" in benchmarks and "default_model_metrics.json" in benchmarks


def _browser() -> str | None:
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.skipif(
    _browser() is None, reason=f"no headless Chromium on this machine (looked for {', '.join(BROWSERS)})"
)
def test_a_headless_browser_renders_the_report(reports, tmp_path):
    _, index = reports["second"]
    common = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND"]
    url = Path(index).resolve().as_uri()
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    assert all(f'id="{a}"' in dom for a in ("blessing", "slices-snr", "slices-z", "slices-bpt", "benchmarks"))
    shot = tmp_path / "page.png"
    subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1400,3000", url], capture_output=True, timeout=120, check=True
    )
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("L"), float)
    assert im.size == (1400, 3000) and pixels.std() > 10  # not a blank page


def test_versus_ppxf_table_shows_model_minus_ppxf_when_recorded(tmp_path):
    versus = {"n": 7, **{k: {"model": [0.01, 0.0456], "ppxf": [0.02, 0.0789]} for k in F.LABEL_KEYS}}
    versus[F.MH]["model_minus_ppxf"] = [0.0, 0.1234]
    path = tmp_path / "model_vs_truth.json"
    path.write_text(json.dumps({"n_test": 7, "table": {}, "versus_ppxf": versus}))
    html = tables.benchmark_section([str(path)])
    assert "model - pPXF sigma" in html and "0.1234" in html and "same 7 mocks" in html
