"""`align sids` end to end on a hand-written catalog with an injected encoder (no weights)."""

import json

import numpy as np
import pytest

from align.run_dir import read_json, write_json, write_jsonl
from align.sid.build import SIDArgs, auto_codebook_size, main, run

WORDS = ["shoe", "boot", "pan", "pot", "lens", "camera", "book", "novel"]


def bag_of_words(texts: list[str]) -> np.ndarray:
    """A deterministic encoder: word counts over WORDS plus a small per-text offset, so texts are distinct."""
    out = np.array([[text.split().count(word) for word in WORDS] for text in texts], dtype=np.float32)
    offsets = np.array([[int(text.split()[-1]) / 100.0] for text in texts], dtype=np.float32)
    return out + offsets


def make_catalog(run_dir, n_items: int = 40) -> list[str]:
    catalog = run_dir / "catalog"
    catalog.mkdir(parents=True)
    rows = [
        {"item_id": f"i{i:03d}", "text": f"{WORDS[i % len(WORDS)]} {WORDS[(i // 3) % len(WORDS)]} {i}"}
        for i in range(n_items)
    ]
    write_jsonl(catalog / "items.jsonl", rows)
    write_json(catalog / "manifest.json", {})
    return [row["item_id"] for row in rows]


def test_run_writes_unique_sids_embeddings_and_report(tmp_path):
    item_ids = make_catalog(tmp_path)
    out = run(SIDArgs(run_dir=str(tmp_path)), encoder=bag_of_words)
    assert out == tmp_path / "sid" and (out / "manifest.json").is_file()
    sid_map = read_json(out / "sid_map.json")
    k = auto_codebook_size(40, 3)  # round(1.5 * 40 ** (1/3)) = round(5.13) = 5
    assert k == 5
    assert sid_map["levels"] == 3 and sid_map["level_sizes"] == [k, k, k]
    assert list(sid_map["items"]) == item_ids
    codes = np.array(list(sid_map["items"].values()))
    assert len({tuple(row) for row in codes.tolist()}) == 40
    assert all((codes[:, level] < size).all() for level, size in enumerate(sid_map["level_sizes"]))
    assert np.bincount(codes[:, 0]).max() <= 8  # balanced by default: ceil(40 / 5)
    embeddings = np.load(out / "embeddings.npy")
    assert embeddings.shape == (40, len(WORDS)) and embeddings.dtype == np.float32
    report = read_json(out / "report.json")
    assert report["method"] == "rq-kmeans-prefix-balanced" and report["sid"]["level_sizes"] == sid_map["level_sizes"]
    assert report["coherence"]["same_first_code"] > report["coherence"]["random_pairs"]
    # Per prefix: (c0, c1) groups hold at most ceil(8 / 5) = 2 items, so the third level tells them apart
    # and no collision level is added.
    assert report["collisions"]["collision_rate"] == 0
    assert report["reconstruction_mse"] >= 0


def test_precomputed_embeddings_are_used_and_checked(tmp_path):
    make_catalog(tmp_path, n_items=12)
    vectors = np.random.default_rng(0).normal(size=(12, 5)).astype(np.float64)
    np.save(tmp_path / "emb.npy", vectors)
    out = run(SIDArgs(run_dir=str(tmp_path), embeddings_npy=str(tmp_path / "emb.npy"), method="rq-kmeans"))
    np.testing.assert_allclose(np.load(out / "embeddings.npy"), vectors.astype(np.float32))
    np.save(tmp_path / "short.npy", vectors[:11])
    with pytest.raises(ValueError, match=r"expected \(12, dim\)"):
        run(SIDArgs(run_dir=str(tmp_path), embeddings_npy=str(tmp_path / "short.npy")))
    vectors[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", vectors)
    with pytest.raises(ValueError, match="row 3 \\(item i003\\)"):
        run(SIDArgs(run_dir=str(tmp_path), embeddings_npy=str(tmp_path / "nan.npy")))


def test_imported_sids_keep_their_codes_and_become_unique(tmp_path):
    item_ids = make_catalog(tmp_path, n_items=4)
    tokens = {
        "i000": ["<a_1>", "<b_2>"],
        "i001": "<a_1><b_2>",
        "i002": [0, 5],
        "i003": ["<a_3>", "<b_0>"],
        "zz": [0, 0],
    }
    (tmp_path / "sids.json").write_text(json.dumps(tokens))
    out = run(SIDArgs(run_dir=str(tmp_path), import_sids=str(tmp_path / "sids.json")), encoder=bag_of_words)
    sid_map = read_json(out / "sid_map.json")
    assert sid_map["items"] == {"i000": [1, 2, 0], "i001": [1, 2, 1], "i002": [0, 5, 0], "i003": [3, 0, 0]}
    assert sid_map["level_sizes"] == [4, 6, 2]
    assert read_json(out / "report.json")["collisions"]["collision_rate"] == 0.5
    # The prepare stage's imported_sids.json layout: {"levels", "level_sizes", "items"}; given sizes are kept.
    table = {"levels": 2, "level_sizes": [8, 8], "items": {item: [i, 0] for i, item in enumerate(item_ids)}}
    (tmp_path / "table.json").write_text(json.dumps(table))
    out = run(SIDArgs(run_dir=str(tmp_path), import_sids=str(tmp_path / "table.json")), encoder=bag_of_words)
    assert read_json(out / "sid_map.json")["level_sizes"] == [8, 8]  # already unique: no collision level
    assert read_json(out / "sid_map.json")["items"]["i003"] == [3, 0]


@pytest.mark.parametrize(
    ("sids", "message"),
    [
        ({"i000": [1], "i001": [2]}, "1 of 3 catalog items have no SID \\(first: item i002\\)"),
        ({"i000": [1], "i001": [2], "i002": "a_1"}, "item i002 has SID 'a_1'"),
        ({"i000": [1], "i001": [2], "i002": [1, 2]}, "different lengths"),
    ],
)
def test_bad_imported_sids_name_the_item(tmp_path, sids, message):
    make_catalog(tmp_path, n_items=3)
    (tmp_path / "sids.json").write_text(json.dumps(sids))
    with pytest.raises(ValueError, match=message):
        run(SIDArgs(run_dir=str(tmp_path), import_sids=str(tmp_path / "sids.json")), encoder=bag_of_words)
    assert not (tmp_path / "sid").exists() and not (tmp_path / "sid.tmp").exists()


def test_missing_catalog_says_which_command_makes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="align prepare"):
        run(SIDArgs(run_dir=str(tmp_path)), encoder=bag_of_words)


def test_item_without_text_is_named(tmp_path):
    make_catalog(tmp_path, n_items=2)
    write_jsonl(
        tmp_path / "catalog" / "items.jsonl", [{"item_id": "a", "text": "shoe 1"}, {"item_id": "b", "text": " "}]
    )
    with pytest.raises(ValueError, match="item b has no text"):
        run(SIDArgs(run_dir=str(tmp_path)), encoder=bag_of_words)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"method": "pq"}, "rq-kmeans, rq-kmeans-balanced"), ({"levels": 26}, "levels"), ({"iters": -1}, "iters"),
     ({"balance_tolerance": -0.05}, "balance_tolerance")],
)
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SIDArgs(run_dir="x", **kwargs)


def test_auto_codebook_size_is_clamped():
    assert [auto_codebook_size(n, 3) for n in (1, 300, 3686, 10**9)] == [4, 10, 23, 256]


def test_main_parses_a_recipe_and_flags(tmp_path):
    make_catalog(tmp_path, n_items=20)
    np.save(tmp_path / "emb.npy", bag_of_words([f"x {i}" for i in range(20)]) + np.eye(20, 8, dtype=np.float32))
    recipe = tmp_path / "sids.yaml"
    recipe.write_text(f"run_dir: {tmp_path}\nlevels: 2\ncodebook_size: 3\n")
    main(["--config", str(recipe), "--embeddings_npy", str(tmp_path / "emb.npy"), "--method", "rq-kmeans"])
    sid_map = read_json(tmp_path / "sid" / "sid_map.json")
    assert sid_map["levels"] == 3 and sid_map["level_sizes"][:2] == [3, 3]
    assert read_json(tmp_path / "sid" / "manifest.json")["config"]["method"] == "rq-kmeans"


def write_train(run_dir, item_ids: list[str]) -> None:
    """Users who buy items i and i + 1 (neighbours in catalog order) together."""
    pairs = enumerate(zip(item_ids, item_ids[1:], strict=False))
    rows = [{"user_id": f"u{i}", "history": [a], "target": b} for i, (a, b) in pairs]
    write_jsonl(run_dir / "catalog" / "train.jsonl", rows)


def test_rq_vae_with_behaviour_and_reassign_keeps_sids_short_and_unique(tmp_path):
    item_ids = make_catalog(tmp_path, n_items=30)
    write_train(tmp_path, item_ids)
    args = SIDArgs(
        run_dir=str(tmp_path), method="rq-vae", collision="reassign", levels=2, codebook_size=12,
        behaviour_weight=0.3, behaviour_dim=4, vae_epochs=5, vae_batch_size=16, vae_hidden_dim=16, vae_latent_dim=4,
        vae_sinkhorn=True,
    )  # fmt: skip
    out = run(args, encoder=bag_of_words)
    sid_map = read_json(out / "sid_map.json")
    codes = np.array([sid_map["items"][item] for item in item_ids])
    assert sid_map["levels"] == 2 and codes.shape == (30, 2) and (codes < 12).all()
    assert len({tuple(row) for row in codes.tolist()}) == 30
    embeddings = np.load(out / "embeddings.npy")
    assert embeddings.shape == (30, len(WORDS) + 4)  # text + behaviour, quantized together
    np.testing.assert_allclose(np.linalg.norm(embeddings[:, : len(WORDS)], axis=1), np.sqrt(0.7), rtol=1e-5)
    report = read_json(out / "report.json")
    assert report["method"] == "rq-vae" and report["behaviour"] == {"weight": 0.3, "dim": 4}
    assert len(report["reconstruction_mse_per_level"]) == 2
    # Every colliding item but one per group moved: as many as items minus distinct codes before resolution.
    assert report["after_resolution"]["moved_items"] == 30 - report["collisions"]["distinct_codes"] > 0
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_json(out / "manifest.json")["inputs"][-1].endswith("train.jsonl")
    assert run(args, encoder=bag_of_words) and read_json(out / "sid_map.json") == sid_map  # same seed, same SIDs


def test_a_catalog_larger_than_the_code_space_is_refused_before_quantizing(tmp_path):
    make_catalog(tmp_path, n_items=10)
    with pytest.raises(ValueError, match=r"10 items do not fit in 3 x 3 = 9 SIDs"):
        run(SIDArgs(run_dir=str(tmp_path), levels=2, codebook_size=3, collision="reassign"), encoder=bag_of_words)
    assert not (tmp_path / "sid").exists()
    out = run(SIDArgs(run_dir=str(tmp_path), levels=2, codebook_size=3), encoder=bag_of_words)  # extra-level fits
    assert read_json(out / "sid_map.json")["levels"] == 3
