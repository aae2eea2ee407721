"""Pictures: `yoco show --png` of a pruned set (its parent per class, the kept framed, scores under them),
of an unpruned set (class names at the left), and `yoco report --html`, a page that opens offline,
rendered by a real headless browser where one is installed."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from test_prune_cli import make_set, write_reference_scores  # tests/ is on sys.path (no __init__.py)

SOURCE = "digits/test/ipc10"
RULES = {"el2n": f"{SOURCE}@el2n-hard-imbalanced-ipc1", "yoco": f"{SOURCE}@lbpe-easy-balanced-ipc1",
         "random": f"{SOURCE}@random-hard-imbalanced-ipc1"}


def _eval(store, set_m, accs):
    """An evaluation run of `set_m` (what `yoco eval` commits; training is not what is tested here)."""
    from yoco_cli.store import Manifest

    outputs, per = {}, []
    for s, a in enumerate(accs):
        digest, size = store.put_bytes(json.dumps({"seed": s, "best": a, "set": set_m.key}).encode())
        outputs[f"seed{s}/result"] = {"digest": digest, "size": size}
        per.append({"seed": s, "best": a, "last": a})
    store.commit_run(Manifest("eval", 1, set_m.key, {}, {"set": set_m.digest("set")}, outputs,
                              {"model": {"name": "convnet"}, "epochs": 5, "per_repeat": per}))


@pytest.fixture
def pruned(cli, store, tmp_path):
    """A digits set (f=2: 400 decoded images), reference scores, and three rules' IPC-1 sets, evaluated."""
    make_set(store)
    scores = write_reference_scores(tmp_path / "data-score-ipc10-ep100.pickle")
    assert cli("score", "--from-file", tmp_path / "data-score-ipc10-ep100.pickle").exit_code == 0
    for key in RULES:
        extra = ["--key", key, "--scores", "reference/data-score-ipc10-ep100"] if key != "random" else ["--metric", key]
        r = cli("prune", SOURCE, "--to", "1", *extra)
        assert r.exit_code == 0, r.stderr
    for i, name in enumerate(RULES.values()):
        _eval(store, store.resolve(name), [0.5 + 0.1 * i, 0.52 + 0.1 * i])
    return scores


def test_show_png_of_a_pruned_set_draws_the_parent_with_the_kept_framed_and_their_scores(cli, store, pruned,
                                                                                          tmp_path):
    from PIL import Image

    from yoco_cli.data import preview
    from yoco_cli.stages import pictures

    sel = pictures.selection(store, store.resolve(RULES["el2n"]))
    assert len(sel.labels) == 400 and int(sel.kept.sum()) == 40  # IPC 1 of f=2: 4 decoded images per class
    el2n = pruned["el2n"].double().numpy()
    np.testing.assert_allclose(sel.scores, el2n)  # the score the rule ranked by, per parent image
    kept = sel.kept.numpy()
    assert sel.scores[kept].min() >= sel.scores[~kept].max()  # hard: the 40 highest EL2N
    assert sel.class_names == [str(c) for c in range(10)]
    assert "40 of 400 kept (framed)" in sel.title and "el2n score (run 0" in sel.title

    out = tmp_path / "kept.png"
    r = cli("show", RULES["el2n"], "--png", out, "--per-class", "20")
    assert r.exit_code == 0, r.stderr
    img = np.asarray(Image.open(out).convert("RGB"))
    arr, band, lines = preview.selection_array(sel, 20)
    assert lines == [2] * 10 and arr.shape[0] == band * 20 + preview.GAP  # 40 images per class, 20 a line
    assert img.shape[0] > arr.shape[0] and img.shape[1] > arr.shape[1]  # plus the title and the class names
    frame = np.all(arr == preview.KEPT, axis=-1)
    assert frame.sum() >= 40 * 4 * (40 - preview.FRAME) * preview.FRAME  # 40 frames (cells >= 40 px)
    label_col = img[:, : img.shape[1] - arr.shape[1]]
    assert (label_col < 100).any()  # the class names are drawn


def test_show_png_of_random_and_ssp_rules_says_no_score(cli, store, pruned, tmp_path):
    from yoco_cli.stages import pictures

    sel = pictures.selection(store, store.resolve(RULES["random"]))
    assert sel.scores is None and "random draw" in sel.title and int(sel.kept.sum()) == 40
    # SSP from the score file's stored k-means list: it reads the scores artifact but ranks by no score
    r = cli("prune", SOURCE, "--to", "1", "--key", "ssp", "--scores", "reference/data-score-ipc10-ep100", "--json")
    assert r.exit_code == 0, r.stderr
    name = r.json()["results"][0]["ref"]
    assert cli("show", name, "--png", tmp_path / "ssp.png").exit_code == 0
    sel = pictures.selection(store, store.resolve(name))
    assert sel.scores is None and "k-means" in sel.title


def test_show_png_of_an_unpruned_set_labels_its_rows(cli, store, tmp_path):
    from PIL import Image

    from yoco_cli.data import preview

    make_set(store)
    out = tmp_path / "grid.png"
    assert cli("show", SOURCE, "--png", out).exit_code == 0
    img = np.asarray(Image.open(out).convert("RGB"))
    grid = preview.grid_array(__import__("yoco_cli.stages.importing", fromlist=["x"]).resolve_set(store, SOURCE)[1])
    assert img.shape[0] == grid.shape[0] and img.shape[1] > grid.shape[1]
    assert np.array_equal(img[:, -grid.shape[1]:], grid)  # today's grid, with a label column at its left
    assert (img[:, : img.shape[1] - grid.shape[1]] < 100).any()


def test_html_renders_any_extra_cell_fields_generically():
    from yoco_cli.stages import report as rep

    table = {"name": "main", "title": "Main <comparison>", "dataset": "digits", "source": "s", "model": "m",
             "columns": ["10→1"], "unit": "percent", "vs": "YOCO", "notes": ["a note"], "reference": None,
             "rows": [["Random", [{"mean": 50.0, "std": 1.0, "n": 3, "best": False,
                                   "diff": {"vs": "YOCO", "mean": -1.5, "lo": -2.8, "hi": -0.2, "n": 3},
                                   "missing": ["run1/repeat0"], "runs": {"run0/repeat0": 49.0, "run0/repeat1": 51.0}}]],
                      ["YOCO", [{"mean": 51.5, "std": 0.5, "n": 1, "best": True}]]]}
    page = rep.to_html([table])
    assert "Main &lt;comparison&gt;" in page and "vs YOCO" in page and "a note" in page
    assert "diff -1.50 [-2.80, -0.20] (vs=YOCO, n=3)" in page and "missing: run1/repeat0" in page
    assert "51.50 (n=1) ★" in page and "50.00 ± 1.00" in page
    assert "<summary>runs (2)</summary>run0/repeat0 49.00, run0/repeat1 51.00</details>" in page  # folded


def test_report_html_is_one_self_contained_page(cli, store, pruned, tmp_path):
    out = tmp_path / "report.html"
    r = cli("report", "--table", "main", "--html", out)
    assert r.exit_code == 0, r.stderr
    page = out.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page)  # nothing fetched from elsewhere
    assert "<script" not in page and "<style>" in page
    assert page.count("data:image/png;base64,") == 1 + len(RULES)  # the plot and one picture per rule
    for label in ("Random", "EL2N", "YOCO"):
        assert f"<th>{label}</th>" in page
    assert f"YOCO: {SOURCE} → IPC 1" in page and "no runs" in page


def _browser() -> str | None:
    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(_browser() is None, reason="no headless browser installed (apt-get install chromium)")
def test_report_html_renders_in_a_headless_browser(cli, store, pruned, tmp_path):
    from PIL import Image

    page, shot = tmp_path / "report.html", tmp_path / "shot.png"
    assert cli("report", "--table", "main", "--html", page).exit_code == 0
    args = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,6000", f"--screenshot={shot}",
            page.as_uri()]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert shot.exists(), done.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    rows_with_ink = (img.min(axis=2) < 128).any(axis=1)  # rows holding dark text or dark pixels
    assert rows_with_ink.sum() > 500, "the page rendered (nearly) blank"
    orange = (np.abs(img - np.array([214, 96, 0])).sum(axis=2) < 40).any(axis=1)
    assert orange.sum() > 100  # the kept frames of the rule pictures are on screen
    ink_rows = np.nonzero(rows_with_ink)[0]
    assert ink_rows[0] < 300 and np.nonzero(orange)[0][0] > ink_rows[0]  # the tables first, the grids below


def test_selection_picture_of_many_classes_can_be_cut_to_the_first_ones():
    import io

    import torch
    from PIL import Image

    from yoco_cli.data import preview

    labels = torch.arange(30).repeat_interleave(2)
    sel = preview.Selection(torch.rand(60, 3, 32, 32), labels, labels % 2 == 0, np.arange(60.0),
                            [f"c{i}" for i in range(30)], "t")
    full = Image.open(io.BytesIO(preview.selection_png(sel, 20)))
    cut = Image.open(io.BytesIO(preview.selection_png(sel, 20, max_classes=10)))
    assert cut.size[1] < full.size[1] / 2  # 10 bands of 30, plus the title
    band = preview.selection_array(sel, 20)[1]
    assert band == 32 + 2 * preview.FRAME + preview.GAP + 13  # 32 px images are not enlarged
