"""Corpus readers and cleaning: on self-written fixtures and on the real ../shared/data."""

import json

import pytest

from core.corpus import (
    clean_records,
    normalise_whitespace,
    read_corpus,
    strip_key_points,
    strip_restated_question,
)
from core.errors import DataError
from tests.conftest import SHARED_DATA


def test_medquad_reader_ids_titles_and_skips(fixture_data):
    read = read_corpus("medquad:medquad", fixture_data)
    ids = [r.id for r in read.records]
    # 1-based QAPair positions; the answerless 3rd pair of 0000001_1 is skipped, not renumbered around
    assert ids == ["1:0000001_1:1", "1:0000001_1:2", "1:0000002_1:1", "2:0000004:1", "2:0000004:2", "2:0000004:3"]
    assert read.skipped_empty == 1
    assert read.failed == ["2_GARD_QA/0000005.xml"]
    assert read.files == 4
    first = read.records[0]
    assert first.title == "Ewing Sarcoma: overview"
    assert read.records[1].title == "Ewing Sarcoma: treatment"
    assert first.source == "medquad/CancerGov" and first.url == "https://example.org/ewing"
    assert first.question == "What is (are) Ewing Sarcoma ?"
    assert first.meta == {"focus": "Ewing Sarcoma", "qtype": "information", "document": "1:0000001_1"}


def test_wikidoc_reader_json_and_jsonl_agree(fixture_data, tmp_path):
    read = read_corpus("wikidoc:wikidoc/wd.json", fixture_data)
    assert [r.id for r in read.records] == ["wikidoc:0", "wikidoc:2"]  # index in the file; empty output skipped
    assert read.records[0].question == "What are the symptoms of Allergy?"
    assert read.records[0].title == read.records[0].question
    rows = json.loads((fixture_data / "wikidoc" / "wd.json").read_text())
    (tmp_path / "wd.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    read_l = read_corpus("wikidoc:wd.jsonl", tmp_path)
    assert [(r.id, r.text) for r in read_l.records] == [(r.id, r.text) for r in read.records]


def test_generic_jsonl_reader(fixture_data, tmp_path):
    read = read_corpus("jsonl:extra.jsonl", fixture_data)
    (rec,) = read.records
    assert (rec.id, rec.title, rec.source, rec.url) == ("x1", "Insulin pump", "devices", "https://example.org/pump")
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "title": "t"}\n')
    with pytest.raises(DataError, match="lacks text"):
        read_corpus("jsonl:bad.jsonl", tmp_path)
    (tmp_path / "broken.jsonl").write_text('{"id": "a",\n')
    with pytest.raises(DataError, match=r"broken.jsonl:1"):
        read_corpus("jsonl:broken.jsonl", tmp_path)


def test_missing_paths_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="data directory"):
        read_corpus("medquad:medquad", tmp_path / "nope")
    with pytest.raises(DataError, match="does not exist"):
        read_corpus("wikidoc:missing.json", tmp_path)
    (tmp_path / "medquad").mkdir()
    with pytest.raises(DataError, match="no MedQuAD subset folders"):
        read_corpus("medquad:medquad", tmp_path)


def test_cleaning_rules_each_counted(fixture_data):
    records = read_corpus("medquad:medquad", fixture_data).records
    kept, counts = clean_records(records)
    by_id = {r.id: r for r in kept}
    assert by_id["1:0000001_1:1"].text == "Ewing sarcoma is a type of tumor that forms in bone or soft tissue of adolescents."
    assert by_id["2:0000004:1"].text == "Albinism and deafness are typical signs."
    # an opening question that does not name the focus is content, not a restatement
    assert by_id["2:0000004:3"].text.startswith("Is it inherited?")
    assert by_id["1:0000001_1:2"].text == "Chemotherapy, surgery and radiation therapy\ntreat Ewing sarcoma of the femur."
    assert "2:0000004:2" not in by_id and by_id["1:0000001_1:2"].duplicate_ids == ["2:0000004:2"]
    assert counts == {"key_points": 1, "restated_question": 1, "whitespace": 2, "duplicate_answers": 1}


def test_cleaning_units():
    assert strip_key_points("Key Points\n - a\n  \nBody text.") == "Body text."
    assert strip_key_points("Key Points only\n") == "Key Points only\n"  # nothing after the block: keep
    assert strip_restated_question("What is X? X is a disease.", "X") == "X is a disease."
    assert strip_restated_question("What is X?", "X") == "What is X?"  # would leave nothing
    assert normalise_whitespace("  a   b \n\n\t c  ") == "a b\nc"


@pytest.mark.skipif(not (SHARED_DATA / "medquad").is_dir(), reason="../shared/data not present")
def test_real_medquad_counts_and_ids():
    read = read_corpus("medquad:medquad", SHARED_DATA)
    assert len(read.records) == 16407
    assert read.files == 11274 and read.failed == []
    assert len({r.id for r in read.records}) == 16407
    by_id = {r.id: r for r in read.records}
    ewing = by_id["1:0000009_1:7"]  # the README's example: 7th QAPair of 1_CancerGov_QA/0000009_1.xml
    assert ewing.meta["focus"] == "Ewing Sarcoma" and ewing.source == "medquad/CancerGov"
    # every dev question's gold id is a record the reader produces
    dev = [json.loads(line) for line in (SHARED_DATA / "splits" / "medquad_dev.jsonl").open()]
    assert all(d["gold_medquad_id"] in by_id for d in dev)
    wiki = read_corpus("wikidoc:wikidoc/medical_meadow_wikidoc_patient_information.json", SHARED_DATA)
    assert len(wiki.records) == 5942
