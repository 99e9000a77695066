import gzip
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from align.catalog import (
    Item,
    SkipLog,
    build_sequences,
    detect_format,
    item_text,
    load_catalog,
    load_interactions,
    load_minionerec,
    load_sid_index,
)

INDUSTRIAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "industrial"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, rows: list[dict]) -> Path:
    return write(path, "".join(json.dumps(row) + "\n" for row in rows))


def test_item_text_skips_empty_fields_and_caps_the_description():
    item = Item("7", "Trail Shoe", description="grip " * 200, brand="", categories="Hiking > Shoes")
    text = item_text(item, max_description=22)
    # 22 characters of "grip grip ..." end inside the 5th "grip": cut back to the last whole word.
    assert text == "Title: Trail Shoe; Categories: Hiking > Shoes; Description: grip grip grip grip ..."
    assert item_text(Item("8", "Mug")) == "Title: Mug"


def test_jsonl_and_csv_catalogs_and_interactions(tmp_path):
    jsonl(tmp_path / "items.jsonl", [
        {"item_id": "a", "title": "Alpha", "brand": "B1", "price": "9.99"},
        {"item_id": 2, "title": " Beta &amp;  Co ", "description": ["one", "two"], "categories": ["X", "Y"]},
    ])
    write(tmp_path / "items.csv", "item_id,title,description,brand,categories,colour\na,Alpha,,B1,,red\n")
    jsonl(tmp_path / "inter.jsonl", [
        {"user_id": "u", "item_id": "a", "timestamp": 5},
        {"user_id": "u", "item_id": 2, "timestamp": "2024-01-01T00:00:00+00:00"},
    ])
    write(tmp_path / "inter.csv", "user_id,item_id\nu,a\nu,2\n")

    items = load_catalog(tmp_path / "items.jsonl")
    assert items == [
        Item("a", "Alpha", brand="B1", extra={"price": "9.99"}),
        Item("2", "Beta & Co", description="one two", categories="X > Y"),
    ]
    assert load_catalog(tmp_path / "items.csv") == [Item("a", "Alpha", brand="B1", extra={"colour": "red"})]
    assert load_interactions(tmp_path / "inter.jsonl") == [("u", "a", 5.0), ("u", "2", 1704067200.0)]
    # No timestamp column: file order is the time.
    assert load_interactions(tmp_path / "inter.csv") == [("u", "a", 0.0), ("u", "2", 1.0)]


def test_lcrec_json(tmp_path):
    items = {
        "0": {"title": "Staples", "description": "['Heavy duty.', 'Fits T50.']", "brand": "Stanley", "categories": ""},
        "1": {"title": "Tape", "description": "", "brand": "", "categories": ""},
    }
    write(tmp_path / "Tools.item.json", json.dumps(items))
    write(tmp_path / "Tools.inter.json", json.dumps({"A1": [1, 0, 1], "A2": [0]}))
    assert load_catalog(tmp_path / "Tools.item.json") == [
        Item("0", "Staples", description="Heavy duty. Fits T50.", brand="Stanley"),
        Item("1", "Tape"),
    ]
    assert load_interactions(tmp_path / "Tools.inter.json") == [
        ("A1", "1", 0.0), ("A1", "0", 1.0), ("A1", "1", 2.0), ("A2", "0", 0.0)
    ]


MINIONEREC_HEADER = "user_id,history_item_title,item_title,history_item_id,item_id,history_item_sid,item_sid\n"


def minionerec_row(user: str, history: list[int], target: int) -> str:
    sid = lambda i: f"<a_{i}><b_{i % 2}><c_0>"  # noqa: E731
    history_sids = str([sid(i) for i in history])
    return f'{user},"[]",t,"{history}",{target},"{history_sids}",{sid(target)}\n'


def test_minionerec_rebuilds_sequences_and_keeps_sids(tmp_path):
    # u1: prefixes of one sequence; u2: capped sliding windows (2 history items) to be joined on their overlap.
    rows = [
        minionerec_row("u1", [3], 4),
        minionerec_row("u1", [3, 4, 5], 6),
        minionerec_row("u1", [3, 4], 5),
        minionerec_row("u2", [1, 2], 3),
        minionerec_row("u2", [2, 3], 4),
    ]
    path = write(tmp_path / "valid.csv", MINIONEREC_HEADER + "".join(rows))
    assert detect_format(path) == "minionerec"
    interactions, sids = load_minionerec(path)
    sequences = {}
    for user, item, t in interactions:
        sequences.setdefault(user, []).append((item, t))
    assert sequences == {
        "u1": [("3", 0.0), ("4", 1.0), ("5", 2.0), ("6", 3.0)],
        "u2": [("1", 0.0), ("2", 1.0), ("3", 2.0), ("4", 3.0)],
    }
    assert sids == {str(i): (i, i % 2, 0) for i in range(1, 7)}
    assert load_interactions(path) == interactions

    write(tmp_path / "bad.csv", MINIONEREC_HEADER + 'u,"[]",t,"[1]",2,"[\'<a_1><b_1><c_0>\']",<a_9><b_0><c_0>\n'
          + 'u,"[]",t,"[]",2,"[]",<a_2><b_0><c_0>\n')
    with pytest.raises(ValueError, match="item 2 has two SIDs"):
        load_minionerec(tmp_path / "bad.csv")


def test_sid_index(tmp_path):
    path = write(tmp_path / "x.index.json", json.dumps({"0": ["<a_1>", "<b_2>"], "1": "<a_0><b_5>"}))
    assert load_sid_index(path) == {"0": (1, 2), "1": (0, 5)}
    write(path, json.dumps({"0": ["<b_1>", "<a_2>"]}))
    with pytest.raises(ValueError, match="item 0 has SID '<b_1><a_2>'"):
        load_sid_index(path)


def test_amazon_dumps_gzip_and_python_literal_lines(tmp_path):
    reviews = [
        {"reviewerID": "R1", "asin": "B02", "unixReviewTime": 200, "overall": 5.0},
        {"reviewerID": "R1", "asin": "B01", "unixReviewTime": 100},
    ]
    with gzip.open(tmp_path / "Tools_5.json.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in reviews)
    meta = [
        "{'asin': 'B01', 'title': 'Drill', 'categories': [['Tools', 'Power Tools'], ['Sale']], 'brand': 'Bosch'}",
        json.dumps({"asin": "B02", "title": "Bits", "category": ["Tools", "Accessories"],
                    "description": ["Set", "of 10"], "imageURL": ["x.jpg"], "price": "$5"}),
    ]
    write(tmp_path / "meta_Tools.json", "\n".join(meta) + "\n")
    assert detect_format(tmp_path / "Tools_5.json.gz") == detect_format(tmp_path / "meta_Tools.json") == "amazon"
    assert load_catalog(tmp_path / "meta_Tools.json") == [
        Item("B01", "Drill", brand="Bosch", categories="Tools > Power Tools"),
        Item("B02", "Bits", description="Set of 10", categories="Tools > Accessories", extra={"price": "$5"}),
    ]
    assert load_interactions(tmp_path / "Tools_5.json.gz") == [("R1", "B02", 200.0), ("R1", "B01", 100.0)]


@pytest.mark.parametrize(
    "name, content, error, message",
    [
        ("items.jsonl", '{"item_id": "x9", "title": ""}\n', ValueError, "item x9 has no title; pass --allow_missing"),
        ("items.jsonl", '{"item_id": "a", "title": "A"}\n{"item_id": "a", "title": "B"}\n', ValueError,
         "items.jsonl:2: duplicate item id 'a'"),
        ("items.json", '{"a": {"title": "A"}, "a": {"title": "B"}}', ValueError, "duplicate key 'a'"),
        ("items.jsonl", "\n  \n", ValueError, "is empty"),
        ("items.jsonl", '{"item_id": "a", "title": "A"}\n{"item_id": "b", "title": \n', ValueError,
         "items.jsonl:2: not valid JSON"),
        ("items.csv", "item_id,name\n1,x\n", ValueError, "missing column"),
        ("items.txt", "hello\n", ValueError, "cannot tell its format"),
    ],
)
def test_bad_catalogs_name_the_problem(tmp_path, name, content, error, message):
    with pytest.raises(error, match=message):
        load_catalog(write(tmp_path / name, content))


def test_missing_path_and_missing_titles_allowed(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl not found"):
        load_catalog(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        load_catalog(jsonl(tmp_path / "i.jsonl", [{"item_id": "a", "title": "A"}]), fmt="xml")
    path = jsonl(tmp_path / "items.jsonl", [{"item_id": "a", "title": "A"}, {"item_id": "b"}, {"item_id": "c"}])
    skips = SkipLog()
    assert load_catalog(path, allow_missing_titles=True, skips=skips) == [Item("a", "A")]
    assert skips.to_dict() == {"item without title": {"count": 2, "examples": ["b", "c"]}}
    with pytest.raises(ValueError, match="timestamp 'soon'"):
        load_interactions(jsonl(tmp_path / "t.jsonl", [{"user_id": "u", "item_id": "a", "timestamp": "soon"}]))


def test_build_sequences_sorts_by_time_and_counts_skips():
    interactions = [
        ("u1", "b", 2.0), ("u1", "a", 1.0), ("u1", "c", 2.0),  # tie at t=2 keeps file order: b before c
        ("u2", "a", 1.0), ("u2", "zz", 0.0),  # unknown item, then u2 has a single interaction
        ("u3", "yy", 3.0),
    ]
    skips = SkipLog()
    assert build_sequences(interactions, ["a", "b", "c"], skips) == {"u1": [("a", 1.0), ("b", 2.0), ("c", 2.0)]}
    assert skips.to_dict() == {
        "interaction with an item not in the catalog": {"count": 2, "examples": ["u2->zz", "u3->yy"]},
        "user with a single interaction (no train/valid/test example)": {"count": 1, "examples": ["u2"]},
    }
    with pytest.raises(ValueError, match="none of the 2 interactions names a catalog item"):
        build_sequences([("u", "x", 0), ("u", "y", 1)], ["a"], SkipLog())
    with pytest.raises(ValueError, match="no user has two or more"):
        build_sequences([("u", "a", 0), ("v", "a", 1)], ["a"], SkipLog())


@given(st.lists(st.tuples(st.sampled_from("uvw"), st.sampled_from("abcq"), st.integers(0, 3)), min_size=1))
def test_build_sequences_property(interactions):
    skips = SkipLog()
    try:
        sequences = build_sequences(interactions, ["a", "b", "c"], skips)
    except ValueError:
        return  # nothing usable: covered by the test above
    for user, events in sequences.items():
        expected = sorted(((i, t) for u, i, t in interactions if u == user and i != "q"), key=lambda e: e[1])
        assert events == expected and len(events) >= 2
    kept = sum(map(len, sequences.values()))
    singles = skips.count("user with a single interaction (no train/valid/test example)")
    assert kept + singles + skips.count("interaction with an item not in the catalog") == len(interactions)


@pytest.mark.skipif(not INDUSTRIAL.is_dir(), reason="real data not beside the repository")
def test_industrial_data_loads():
    items = load_catalog(INDUSTRIAL / "items.json")
    interactions = load_interactions(INDUSTRIAL / "sequences.inter.json")
    assert (len(items), len(interactions)) == (3686, 22174)
    sequences = build_sequences(interactions, [item.item_id for item in items], SkipLog())
    assert len(sequences) == 3285
    _, sids = load_minionerec(INDUSTRIAL / "test.csv")
    assert all(len(codes) == 3 for codes in sids.values())
