"""Templates as data: loading, validation messages, rendering, and the fields they are filled with."""

import random
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from align.data.fields import SOURCE_FIELDS, clean_text, history_fields, item_fields, sequence_fields
from align.data.templates import DEFAULT_TEMPLATES_DIR, chat_messages, load_templates, render

ITEMS = {
    "i1": {"item_id": "i1", "title": "Red  Mug", "description": "A mug.\nRed.", "brand": "Acme", "categories": "Home"},
    "i2": {"item_id": "i2", "title": "Blue Plate", "description": "", "brand": "", "categories": ""},
    "i3": {"item_id": "i3", "title": "", "description": "d", "brand": "b", "categories": "c"},
}
SIDS = {"i1": "<a_1><b_0>", "i2": "<a_2><b_0>", "i3": "<a_0><b_1>"}

GOOD = """\
task: mytask
source: sequence
splits: [sft, grpo]
prompts:
  - "History: {history_sids}. Next?"
  - "After {history_sids}?"
response: "{target_sid}"
"""


def write_template(folder: Path, text: str, name: str = "mytask.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_default_templates_dir_is_the_repo_folder():
    assert DEFAULT_TEMPLATES_DIR == Path(__file__).resolve().parents[1] / "data_templates"


def test_every_shipped_template_renders_every_paraphrase_with_real_fields():
    templates = load_templates()
    assert {"seqrec", "titles2sid", "sid2title", "title2sid"} <= set(templates)
    assert templates["seqrec"].splits == ("sft", "grpo", "eval")
    fields = {
        "item": item_fields(ITEMS["i1"], SIDS["i1"]),
        "sequence": sequence_fields(["i1", "i2"], "i3", ITEMS, SIDS, max_history=10),
    }
    for template in templates.values():
        assert 3 <= len(template.prompts) <= 5, template.task
        for index in range(len(template.prompts)):
            prompt, response = render(template, fields[template.source], index)
            assert "{" not in prompt and "}" not in prompt, (template.task, prompt)
            assert len(prompt) < 120, (template.task, prompt)  # short prompts: CPU token budget
            assert response == template.response.format(**fields[template.source])
    assert render(templates["seqrec"], fields["sequence"], 0) == (
        "History: <a_1><b_0><a_2><b_0>. Next item?",
        "<a_0><b_1>",
    )
    assert render(templates["sid2title"], fields["item"], 0) == ("What is the title of item <a_1><b_0>?", "Red Mug")


def test_bad_placeholder_names_file_prompt_and_fields(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_template(
        tmp_path / "data_templates", GOOD.replace("After {history_sids}", "After {histroy_sids}"), "seqrec.yaml"
    )
    with pytest.raises(ValueError) as err:
        load_templates(tmp_path / "data_templates")
    assert str(err.value) == (
        "data_templates/seqrec.yaml: prompt 2 uses {histroy_sids}; fields for source 'sequence' are: "
        "history_sids, history_titles, target_sid, target_title, n_history"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace('response: "{target_sid}"\n', ""), "mytask.yaml: missing key(s) response; a template has"),
        (GOOD + "prompt: x\n", "mytask.yaml: unknown key(s) prompt; the keys are"),
        (GOOD.replace("source: sequence", "source: user"), "source 'user' is unknown; sources are: item, sequence"),
        (GOOD.replace("[sft, grpo]", "[sft, train]"), "splits must be a non-empty list drawn from"),
        (GOOD.split("prompts:")[0] + 'prompts: []\nresponse: "{target_sid}"\n', "prompts must be a non-empty list"),
        (GOOD.replace('"{target_sid}"', '"{title}"'), "response uses {title}; fields for source 'sequence' are"),
        (GOOD.replace("Next?", "Next {}?"), "prompt 1 uses {}; fields for source"),
        (GOOD.replace("Next?", "Next {?"), "prompt 1: expected '}' before end of string"),
        (GOOD.replace('"{target_sid}"', '"{target_title}"'), "splits grpo and eval need source: sequence and"),
        ("task: [unclosed\n", "mytask.yaml: not valid YAML"),
    ],
)
def test_malformed_template_errors_name_the_file(tmp_path, text, message):
    write_template(tmp_path, text)
    with pytest.raises(ValueError, match=re.escape(message)):
        load_templates(tmp_path)


def test_folder_and_task_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found: pass --templates_dir"):
        load_templates(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="holds no .yaml templates"):
        load_templates(tmp_path)
    write_template(tmp_path, GOOD)
    with pytest.raises(ValueError, match="no template for task 'seqrec' in .*; tasks there are: mytask"):
        load_templates(tmp_path, ["seqrec"])
    write_template(tmp_path, GOOD, "copy.yaml")  # files load in name order: copy.yaml first
    with pytest.raises(ValueError, match="mytask.yaml: task 'mytask' is already defined in .*copy.yaml"):
        load_templates(tmp_path)


def test_render_choice_index_or_seeded_rng(tmp_path):
    template = load_templates(write_template(tmp_path, GOOD).parent)["mytask"]
    fields = sequence_fields(["i1"], "i2", ITEMS, SIDS, max_history=10)
    assert render(template, fields, 1) == ("After <a_1><b_0>?", "<a_2><b_0>")
    draws = [render(template, fields, random.Random(7))[0] for _ in range(3)]
    expected_index = random.Random(7).randrange(2)
    assert draws == [template.prompts[expected_index].format(**fields)] * 3
    rng = random.Random(0)
    assert {render(template, fields, rng)[0] for _ in range(20)} == {
        "History: <a_1><b_0>. Next?",
        "After <a_1><b_0>?",
    }
    assert template.fields_used(1) == {"history_sids", "target_sid"}


def test_sequence_fields_hand_computed():
    long_title = "word " * 20  # 100 characters: cut to 60 in a history, kept up to 120 as the target title
    items = {**ITEMS, "i4": {"item_id": "i4", "title": long_title}}
    sids = {**SIDS, "i4": "<a_3><b_3>"}
    fields = sequence_fields(["i2", "i3", "i1", "i4"], "i4", items, sids, max_history=3)
    cut = clean_text(long_title, 60)
    assert cut == "word " * 11 + "word…" and len(cut) <= 60
    assert fields == {
        "history_sids": "<a_0><b_1><a_1><b_0><a_3><b_3>",
        "history_titles": f'"Red Mug"; "{cut}"',  # i3 has no title: left out
        "n_history": 3,
        "target_sid": "<a_3><b_3>",
        "target_title": long_title.strip(),
    }
    assert set(fields) == set(SOURCE_FIELDS["sequence"])
    assert history_fields(["i3"], ITEMS, SIDS, max_history=5)["history_titles"] == ""
    item = item_fields(ITEMS["i1"], SIDS["i1"])
    assert item == {
        "sid": "<a_1><b_0>",
        "title": "Red Mug",
        "description": "A mug. Red.",
        "brand": "Acme",
        "categories": "Home",
    }
    assert set(item) == set(SOURCE_FIELDS["item"])


@given(st.text(), st.integers(min_value=2, max_value=200))
def test_clean_text_is_capped_single_spaced_and_stable(text, max_chars):
    out = clean_text(text, max_chars)
    assert len(out) <= max_chars
    assert out == " ".join(out.split())
    assert clean_text(out, max_chars) == out
    if len(" ".join(text.split())) <= max_chars:
        assert out == " ".join(text.split())


def test_readme_documents_every_field():
    readme = (DEFAULT_TEMPLATES_DIR / "README.md").read_text()
    for source, fields in SOURCE_FIELDS.items():
        assert f"`{source}`" in readme
        for name in fields:
            assert f"| `{name}` |" in readme, name


def test_chat_messages_system_prompt_optional():
    assert chat_messages("hi") == [{"role": "user", "content": "hi"}]
    assert chat_messages("hi", "sys") == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
