"""The Hugging Face Hub both ways (docs/hub.md), with no network: a prepared Hub cache read through
huggingface_hub's offline path, a loopback Hub on 127.0.0.1 for downloads and uploads, and
`datasets.load_dataset` reading what `yoco publish --folder` wrote."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")
pytest.importorskip("pyarrow")
datasets = pytest.importorskip("datasets")

from hub_fake import SHA, FakeHub, authors_repo, digits_pixels, files_of, hub_cache

REPO = "he-yang/2025-tiny-digits-ipc-3"
TINY = ("--dynamics-epochs", "3", "--dynamics-seeds", "1")
FAST_EVAL = ("--repeats", "1", "--epochs", "2", "--model", "convnet:width=16,depth=2")


@pytest.fixture
def hf_env(tmp_path, monkeypatch):
    """A private Hugging Face cache and datasets cache for the test."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "ds-cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path


@pytest.fixture
def cached_repo(hf_env, monkeypatch):
    """REPO in the authors' layout, in the Hub cache, offline."""
    files = files_of(authors_repo(hf_env / "src"))
    hub_cache(hf_env / "hf-cache", REPO, files)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return files


def _stored_hub_runs(store):
    return [m for m in store.all_runs() if m.stage == "hub"]


# -- fetch -----------------------------------------------------------------------------------------
def test_offline_cache_fetch_then_prune_and_eval(cli, store, cached_repo):
    r = cli("fetch", f"hf:{REPO}", "--json")
    assert r.exit_code == 0, r.stderr
    [doc] = r.json()
    assert doc["name"] == f"hf/{REPO}" and doc["kind"] == "set" and not doc["cached"]
    assert doc["summary"] == f"parquet digits ipc3, 30 images from {REPO}@{SHA[:12]}"

    from yoco_cli.stages.sets import load_set

    m = store.resolve(f"hf/{REPO}")
    cset = load_set(store, m)
    x, y = digits_pixels(3)
    assert cset.labels.tolist() == y.tolist()
    assert cset.images.mul(255).round().byte()[:, 0].numpy().tolist() == x.tolist()
    assert cset.meta["hub"] == {"repo": REPO, "revision": "main", "sha": SHA}  # the revision is pinned
    assert m.params["sha"] == SHA and m.meta["classes"][3] == "digit 3"
    assert cset.dataset == "digits" and cset.value_space == "raw01" and cset.ipc == 3

    again = cli("fetch", f"hf:{REPO}", "--json")
    assert again.exit_code == 0 and again.json()[0]["cached"]

    p = cli("prune", f"hf/{REPO}", "--to", "1", "--metric", "lbpe", "--balanced", *TINY, "--json")
    assert p.exit_code == 0, p.stderr
    pruned = f"hf/{REPO}@lbpe-easy-balanced-ipc1"
    assert store.resolve(pruned).meta["set"]["stored_shape"] == [10, 1, 8, 8]
    e = cli("eval", pruned, *FAST_EVAL, "--json")
    assert e.exit_code == 0, e.stderr
    assert 0.0 <= e.json()[0]["best_mean"] <= 1.0


def test_offline_without_the_repo_in_the_cache_is_one_line(cli, store, cached_repo):
    r = cli("fetch", "hf:he-yang/not-cached")
    assert r.exit_code == 4
    assert "he-yang/not-cached is not in the Hugging Face cache and the Hub is offline" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not _stored_hub_runs(store)


def test_http_fetch_through_a_loopback_hub(hf_env, monkeypatch, store):
    import yoco_cli as yoco

    monkeypatch.delenv("YOCO_OFFLINE")
    files = files_of(authors_repo(hf_env / "src"))
    with FakeHub({REPO: files}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        [first] = yoco.fetch(f"hf:{REPO}")
        [second] = yoco.fetch(f"hf:{REPO}@{SHA}")
        paths = [p.split("?")[0] for _, p in hub.requests]
    assert first.name == f"hf/{REPO}" and not first.cached and second.cached and first.key == second.key
    assert f"/api/datasets/{REPO}" in paths
    assert f"/datasets/{REPO}/resolve/{SHA}/data/train-00000-of-00001.parquet" in paths
    assert paths.count(f"/datasets/{REPO}/resolve/{SHA}/README.md") <= 2  # HEAD + GET once: the cache served again
    snap = hf_env / "hf-cache" / f"datasets--{REPO.replace('/', '--')}" / "snapshots" / SHA
    assert (snap / "data" / "train-00000-of-00001.parquet").read_bytes() == files["data/train-00000-of-00001.parquet"]


def test_image_folder_repos_number_classes_as_imagefolder(cli, store, hf_env, monkeypatch):
    import io

    from PIL import Image

    x, y = digits_pixels(2)
    files = {}
    for i, (img, label) in enumerate(zip(x, y)):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        files[f"train/class-{label:02d}/{i:03d}.png"] = buf.getvalue()
    hub_cache(hf_env / "hf-cache", "me/folders", files)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = cli("fetch", "hf:me/folders")
    assert r.exit_code == 0, r.stderr
    from yoco_cli.stages.sets import load_set

    m = store.resolve("hf/me/folders")
    cset = load_set(store, m)
    assert cset.labels.tolist() == y.tolist() and m.meta["classes"][:2] == ["class-00", "class-01"]
    assert cset.images.mul(255).round().byte()[:, 0].numpy().tolist() == x.tolist()


def test_large_repos_ask_first(hf_env, monkeypatch, cli, store):
    from yoco_cli.stages import hub_sets as stage

    monkeypatch.delenv("YOCO_OFFLINE")
    monkeypatch.setattr(stage, "CONFIRM_BYTES", 1000)  # the repo's few kB count as "over 1 GB"
    with FakeHub({REPO: files_of(authors_repo(hf_env / "src"))}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        no = cli("fetch", f"hf:{REPO}")
        assert no.exit_code == 2 and "pass --yes to fetch it" in no.stderr
        assert not _stored_hub_runs(store) and not any("/resolve/" in p for _, p in hub.requests)
        yes = cli("fetch", f"hf:{REPO}", "--yes")
    assert yes.exit_code == 0, yes.stderr


def test_the_authors_imagenet_sets_read_as_imagenet_with_their_normalisation():
    """rethinkdc trains on its Hub sets with ToTensor() + Normalize(ImageNet mean, std) at 224 px, labels
    0..999 in ImageFolder's sorted-WNID order: yoco reads them as raw01 `imagenet` with those stats."""
    from yoco_cli.data.hub_layout import infer_dataset
    from yoco_cli.stages.datasets import dataset_stats

    assert infer_dataset(3, 224, 1000) == "imagenet" and infer_dataset(3, 224, 10) is None
    assert dataset_stats("imagenet") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


# -- publish ---------------------------------------------------------------------------------------
def _pruned_hub_set(cli, cached_repo) -> str:
    assert cli("fetch", f"hf:{REPO}").exit_code == 0
    p = cli("prune", f"hf/{REPO}", "--to", "1", "--metric", "lbpe", "--balanced", *TINY)
    assert p.exit_code == 0, p.stderr
    ref = f"hf/{REPO}@lbpe-easy-balanced-ipc1"
    assert cli("eval", ref, *FAST_EVAL).exit_code == 0
    return ref


def test_publish_folder_loads_with_datasets_and_imports_back_identical(cli, store, cached_repo, tmp_path):
    from yoco_cli.data.hub_layout import split_card
    from yoco_cli.stages.sets import load_set

    ref = _pruned_hub_set(cli, cached_repo)
    out = tmp_path / "published"
    r = cli("publish", ref, "--folder", out, "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["exact"] == "png"  # 8-bit pixels: the PNGs are the set, no tensor file
    assert r.json()["files"] == ["README.md", "data/train-00000-of-00001.parquet", "yoco/selection.json",
                                 "yoco/set.json"]
    m = store.resolve(ref)
    cset = load_set(store, m)

    ds = datasets.load_dataset(str(out), split="train")
    assert ds.num_rows == 10 and ds.features["label"].names[:2] == ["digit 0", "digit 1"]
    assert ds["label"] == cset.labels.tolist()
    import numpy as np

    pixels = np.stack([np.asarray(im) for im in ds["image"]])
    assert np.array_equal(pixels, cset.images.mul(255).round().byte()[:, 0].numpy())

    card, _ = split_card((out / "README.md").read_text())
    y = card["yoco"]
    assert card["license"] == "mit" and {"dataset-distillation", "dataset-pruning"} <= set(card["tags"])
    assert y["parent"] == {"name": f"hf/{REPO}", "key": store.resolve(f"hf/{REPO}").key,
                           "digest": store.resolve(f"hf/{REPO}").digest("set")}
    assert y["rule"]["key"] == "lbpe-easy-balanced" and y["rule"]["from"] == 3 and y["rule"]["to"] == 1
    assert y["lbpe_window"]["window"] and y["dynamics"]["seeds"] == [0] and y["dynamics"]["epochs"] == 3
    assert y["version"] and y["evaluations"][0]["epochs"] == 2 and y["source"]["sha"] == SHA
    sel = json.loads((out / "yoco" / "selection.json").read_text())
    assert sel["kept"] == cset.origin.tolist() and len(sel["scores"]) == 30 and sel["metric"] == "lbpe"

    back = cli("import", out, "--name", "back/again", "--json")
    assert back.exit_code == 0, back.stderr
    b = store.resolve("back/again")
    assert b.digest("set") == m.digest("set")  # byte-identical tensors and metadata
    assert b.meta["made_by"] == m.meta["made_by"]


def test_a_set_png_cannot_hold_ships_its_tensors(cli, store, tmp_path):
    r = cli("condense", "digits", "--method", "random", "--ipc", "2")
    assert r.exit_code == 0, r.stderr
    out = tmp_path / "pub"
    p = cli("publish", "digits/random/ipc2", "--folder", out, "--json")
    assert p.exit_code == 0, p.stderr
    assert p.json()["exact"] == "safetensors" and (out / "yoco" / "set.safetensors").is_file()
    ds = datasets.load_dataset(str(out), split="train")
    assert ds.num_rows == 80  # the decoded images (factor 2: four per stored image)
    back = cli("import", out, "--json")
    assert back.exit_code == 0, back.stderr
    assert back.json()["ref"] == "import/digits/hub-ipc2"
    assert store.resolve("import/digits/hub-ipc2").digest("set") == store.resolve("digits/random/ipc2").digest("set")


def test_a_fetched_set_in_any_row_order_publishes_and_comes_back_identical(cli, store, hf_env, monkeypatch,
                                                                           tmp_path):
    hub_cache(hf_env / "hf-cache", REPO, files_of(authors_repo(hf_env / "src", shuffle_seed=3)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli("fetch", f"hf:{REPO}").exit_code == 0
    assert cli("publish", f"hf/{REPO}", "--folder", tmp_path / "pub").exit_code == 0
    assert not (tmp_path / "pub" / "yoco" / "set.safetensors").exists()  # the PNGs are the set
    back = cli("import", tmp_path / "pub", "--name", "again")
    assert back.exit_code == 0, back.stderr
    assert store.resolve("again").digest("set") == store.resolve(f"hf/{REPO}").digest("set")


def test_an_interrupted_publish_leaves_no_folder(cli, store, monkeypatch, tmp_path):
    from yoco_cli.data import hub_layout

    assert cli("condense", "digits", "--method", "random", "--ipc", "2").exit_code == 0

    def cut(out, *args, **kw):
        (out / "data").mkdir(parents=True)
        (out / "data" / "train-00000-of-00001.parquet").write_bytes(b"PAR1")
        raise KeyboardInterrupt

    monkeypatch.setattr(hub_layout, "write_parquet", cut)
    r = cli("publish", "digits/random/ipc2", "--folder", tmp_path / "pub")
    assert r.exit_code == 130
    assert sorted(p.name for p in tmp_path.iterdir() if "pub" in p.name) == []


def test_publish_uploads_one_commit_to_the_hub(cli, store, cached_repo, monkeypatch, tmp_path):
    ref = _pruned_hub_set(cli, cached_repo)
    offline = cli("publish", ref, "hf:me/tiny-pruned")
    assert offline.exit_code == 4 and "offline (YOCO_OFFLINE or HF_HUB_OFFLINE): cannot upload" in offline.stderr
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("YOCO_OFFLINE")
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    local = tmp_path / "local"
    assert cli("publish", ref, "--folder", local).exit_code == 0
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        r = cli("publish", ref, "hf:me/tiny-pruned", "--private", "--json")
        pr = cli("publish", ref, "hf:me/tiny-pruned", "--create-pr", "--json")
        branch = cli("publish", ref, "hf:me/tiny-pruned", "--revision", "yoco-v1", "--json")
        fetched = cli("fetch", "hf:me/tiny-pruned", "--json")  # what arrived, fetched back over HTTP
        assert fetched.exit_code == 0, fetched.stderr
        assert store.resolve("hf/me/tiny-pruned").digest("set") == store.resolve(ref).digest("set")
    assert r.exit_code == 0, r.stderr
    made = hub.created[0]
    assert made["name"] == "tiny-pruned" and (made.get("visibility") == "private" or made.get("private") is True)
    assert hub.created[0]["type"] == "dataset"
    commit = hub.commits[0]
    assert commit["repo"] == "me/tiny-pruned" and commit["revision"] == "main"
    written = files_of(local)  # the same bytes --folder writes; the card names the repo instead of OWNER/NAME
    assert sorted(commit["files"]) == sorted(written)
    assert all(commit["files"][k] == written[k] for k in written if k != "README.md")
    assert b'load_dataset("me/tiny-pruned", split="train")' in commit["files"]["README.md"]
    assert "publish " + ref in commit["header"]["summary"]
    assert r.json()["url"].endswith(f"/datasets/me/tiny-pruned/commit/{SHA}")
    assert pr.exit_code == 0, pr.stderr + str(hub.requests[-4:])
    assert hub.commits[1]["revision"] == "refs/pr/1" and hub.commits[1]["create_pr"] and pr.json()["url"].endswith("/discussions/1")
    assert branch.exit_code == 0, branch.stderr
    assert hub.commits[2]["revision"] == "yoco-v1" and ("POST", "/api/datasets/me/tiny-pruned/branch/yoco-v1") in \
        hub.requests


# -- bad input -------------------------------------------------------------------------------------
def _table_without(column: str, folder: Path) -> None:
    import pyarrow.parquet as pq

    shard = folder / "data" / "train-00000-of-00001.parquet"
    pq.write_table(pq.read_table(shard).drop_columns([column]), shard)


def _card_lies(folder: Path) -> None:
    text = (folder / "README.md").read_text()
    import re

    (folder / "README.md").write_text(re.sub(r"download_size: \d+", "download_size: 12", text))


def _card_miscounts(folder: Path) -> None:
    text = (folder / "README.md").read_text()
    (folder / "README.md").write_text(text.replace("num_examples: 30", "num_examples: 99"))


def _truncate(folder: Path) -> None:
    shard = folder / "data" / "train-00000-of-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-200])


@pytest.mark.parametrize("damage,message", [
    (lambda f: _table_without("image", f), "has no image column (columns: class_id)"),
    (lambda f: _table_without("class_id", f), "has no integer label column (columns: image;"),
    (_truncate, "train-00000-of-00001.parquet is not a whole parquet file"),
    (_card_lies, "the dataset card says the data files hold 12 bytes, the repo's hold"),
    (_card_miscounts, "the dataset card says the train split has 99 rows, its parquet files hold 30"),
    ("label", "label 12 is outside the class list: the class list has 10 classes (0..9)"),
])
def test_bad_repos_are_one_line_and_store_nothing(cli, store, hf_env, monkeypatch, damage, message):
    import numpy as np

    src = hf_env / "src"
    if damage == "label":
        labels = np.repeat(np.arange(10), 3)
        labels[4] = 12
        authors_repo(src, names=[f"c{i}" for i in range(13)])  # datasets refuses 12 for 10 names: write it with 13
        import yaml

        from yoco_cli.data.hub_layout import split_card
        meta, body = split_card((src / "README.md").read_text())
        meta["dataset_info"]["features"][1]["dtype"]["class_label"]["names"] = {str(i): f"c{i}" for i in range(10)}
        _rewrite_labels(src, labels)
        meta["dataset_info"]["download_size"] = (src / "data" / "train-00000-of-00001.parquet").stat().st_size
        (src / "README.md").write_text("---\n" + yaml.safe_dump(meta) + "---\n" + body)
    else:
        authors_repo(src)
        damage(src)
    hub_cache(hf_env / "hf-cache", REPO, files_of(src))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = cli("fetch", f"hf:{REPO}")
    assert r.exit_code == 3, r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not _stored_hub_runs(store) and f"hf/{REPO}" not in store.refs()


def _rewrite_labels(folder: Path, labels) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    shard = folder / "data" / "train-00000-of-00001.parquet"
    t = pq.read_table(shard)
    t = t.set_column(t.schema.get_field_index("class_id"), "class_id", pa.array(labels.tolist(), pa.int64()))
    pq.write_table(t, shard)


def test_without_the_extra_hf_and_publish_name_it(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    for args in (("fetch", "hf:a/b"), ("publish", "digits/x", "--folder", "out")):
        r = cli(*args)
        assert r.exit_code == 2, r.stderr
        assert "needs yoco's [hub] extra (huggingface_hub not installed)" in r.stderr
        assert 'pip install "yoco-cli[hub]"' in r.stderr


def test_fetch_list_shows_the_hf_form(cli):
    r = cli("fetch", "--list")
    assert r.exit_code == 0 and "yoco fetch hf:OWNER/NAME[@REVISION]" in r.stderr


def test_bad_names(cli):
    r = cli("fetch", "hf:just-a-name")
    assert r.exit_code == 2 and "'hf:just-a-name' is not a Hub dataset name" in r.stderr
    p = cli("publish", "digits/x")
    assert p.exit_code == 2 and "name where to publish" in p.stderr
