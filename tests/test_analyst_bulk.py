"""dedup-admin's bulk import without a server: what it gathers from folders, globs and
manifests, how it cuts batches to the server's limits, and which labels it accepts."""

from __future__ import annotations

import json

import pytest

from dedup.errors import InvalidArgument
from dedup.types import Label
from tools.analyst import bulk
from tools.analyst.cli import parser

SCAM = (Label("spam.scam", 2),)


def test_a_folder_is_walked_recursively_in_order_and_non_images_are_skipped(tmp_path):
    (tmp_path / "b" / "deep").mkdir(parents=True)
    for rel in ("a.jpg", "b/c.PNG", "b/deep/d.webp", "b/notes.txt", ".hidden.jpg", "z.heic"):
        (tmp_path / rel).write_bytes(b"x")
    entries, skipped = bulk.gather([str(tmp_path)], labels=SCAM)
    names = [e.path.relative_to(tmp_path).as_posix() for e in entries]
    assert names == ["a.jpg", "z.heic", "b/c.PNG", "b/deep/d.webp"]
    assert skipped == [str(tmp_path / "b" / "notes.txt")]
    assert all(e.labels == SCAM and not e.error for e in entries)


def test_globs_missing_files_texts_and_hashes_each_become_entries(tmp_path):
    for name in ("x1.jpg", "x2.jpg", "y.jpg"):
        (tmp_path / name).write_bytes(b"x")
    entries, _ = bulk.gather([str(tmp_path / "x*.jpg"), str(tmp_path / "nope.jpg"),
                              str(tmp_path / "q*.png")], texts=["hello"], pdqs=[" ab "],
                             labels=SCAM)
    assert [e.name.rsplit("/", 1)[-1] for e in entries] == [
        "x1.jpg", "x2.jpg", "nope.jpg", "q*.png", "text[0]", "pdq[0]"]
    assert entries[2].error == "no such file or folder"
    assert entries[3].error == "no file matches this pattern"
    assert entries[4].text == "hello" and entries[5].pdq == "ab"


def test_csv_and_jsonl_manifests_bring_their_own_labels_and_name_bad_rows(tmp_path):
    (tmp_path / "img.png").write_bytes(b"x")
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("path,labels,severity,source,note\n"
                        "img.png,spam.scam:4;fraud.crypto,2,CASE-1,n\n"
                        "img.png,,,,\n"
                        "img.png,Bad Label,,,\n"
                        ",spam.scam,,,\n")
    rows = bulk.read_manifest(csv_path, labels=(Label("default.label"),), source="CLI")
    assert rows[0].labels == (Label("spam.scam", 4), Label("fraud.crypto", 2))
    assert (rows[0].path, rows[0].source, rows[0].note) == (tmp_path / "img.png", "CASE-1", "n")
    assert rows[1].labels == (Label("default.label"),) and rows[1].source == "CLI"
    assert "bad label name" in rows[2].error and rows[2].name == f"{csv_path}:4"
    assert "no content" in rows[3].error
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text("\n".join([json.dumps({"text": "buy now", "labels": ["spam.scam:3"]}),
                                "not json", json.dumps({"pdq": "ab", "colour": "red"}), ""]))
    rows = bulk.read_manifest(jsonl)
    assert rows[0].text == "buy now" and rows[0].labels == (Label("spam.scam", 3),)
    assert "not JSON" in rows[1].error and "unknown keys colour" in rows[2].error
    with pytest.raises(InvalidArgument, match="columns"):
        bad = tmp_path / "bad.csv"
        bad.write_text("file,label\nx,y\n")
        bulk.read_manifest(bad)


def test_batches_stay_within_the_item_and_message_limits(tmp_path):
    entries = []
    for i, size in enumerate((400, 400, 400, 400, 400, 2000)):
        p = tmp_path / f"{i}.jpg"
        p.write_bytes(b"x" * size)
        entries.append(bulk.Entry(str(p), path=p, labels=SCAM))
    entries.insert(2, bulk.Entry("other", text="t", labels=(Label("other.label"),)))
    limits = bulk.Limits(max_batch_items=2, max_message_bytes=1200, max_image_bytes=1500)
    refused: list[bulk.Outcome] = []
    batches = [[e.name.rsplit("/", 1)[-1] for e in b] for b, _ in
               bulk._batches(entries, limits, refused.append)]
    # labels group items; each request holds <= 2 items and <= 90% of 1200 bytes
    assert batches == [["0.jpg", "1.jpg"], ["2.jpg", "3.jpg"], ["4.jpg"], ["other"]]
    assert [o.entry.name.rsplit("/", 1)[-1] for o in refused] == ["5.jpg"]
    assert "max_image_bytes=1500" in refused[0].error


def test_labels_follow_the_service_rule_and_severity_zero_is_refused():
    assert bulk.parse_label("spam.scam:3") == Label("spam.scam", 3)
    assert bulk.parse_label("spam.scam", 2) == Label("spam.scam", 2)
    assert bulk.parse_labels(["a:2; b", "c"], 4) == (Label("a", 2), Label("b", 4), Label("c", 4))
    for bad in ("Spam Scam:3", "spam.scam:0", "spam.scam:6", "spam.scam:-1", "spam:scam:x", ""):
        with pytest.raises(InvalidArgument):
            bulk.parse_label(bad)


def test_json_and_connection_options_work_before_or_after_the_command():
    p = parser()
    assert p.parse_args(["--json", "stats"]).json
    assert p.parse_args(["stats", "--json"]).json
    args = p.parse_args(["--target", "h:1", "list", "--timeout", "5"])
    assert (args.target, args.timeout, args.json) == ("h:1", 5.0, False)
    with pytest.raises(SystemExit):
        p.parse_args(["list", "--limit", "0"])
    with pytest.raises(SystemExit):
        p.parse_args(["remove", "3"])  # a reason is required
