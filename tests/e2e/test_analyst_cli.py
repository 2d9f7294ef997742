"""dedup-admin as analysts run it: a subprocess against a real server on loopback.

A folder of real images (one broken) is imported with a summary naming the broken file, a re-run
adds nothing, a CSV manifest brings its own labels and severities, an edited copy is found with
the right label, a removal with a reason shows in the seed's history with who and why, a
restore brings the seed back (at once and after a restart), and PDQ hashes print their results.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from dedup.errors import InvalidArgument, LimitExceeded, PermissionDenied
from dedup.types import Item, Label
from tools.localserver import REPO, TOKENS

pytestmark = pytest.mark.slow

ALICE = "alice-token"
CONFIG = f"""
[spaces."image:effnet-lite0"]
model = "image:effnet-lite0"
threshold = 0.682

[spaces."pdq"]
model = "pdq"
threshold = 0.67578125
partner_threshold = 0.87890625
min_quality = 50

[limits]
max_batch_items = 4   # a folder of 7 goes in several requests
max_reason_chars = 200

[server]
tokens = {{ "{ALICE}" = {{ role = "analyst", name = "alice" }} }}
"""
FOLDER_IMAGES = ("astronaut", "coffee", "chelsea", "rocket", "clock", "camera", "moon")


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("analyst-cli", CONFIG)


def admin(server, *args, token: str = ALICE, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``dedup-admin`` (python -m tools.analyst) as a subprocess against ``server``."""
    env = dict(os.environ, DEDUP_TARGET=server.target, DEDUP_TOKEN=token,
               PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "tools.analyst", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def edited(img: Image.Image) -> bytes:
    """A re-post: cropped 6% a side, scaled to 80%, re-encoded as JPEG quality 75."""
    w, h = img.size
    dx, dy = int(w * 0.06), int(h * 0.06)
    out = img.crop((dx, dy, w - dx, h - dy)).resize((int(w * 0.8), int(h * 0.8)))
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=75)
    return buf.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, skimage_images, encode):
    root = tmp_path_factory.mktemp("bank")
    (root / "more").mkdir()
    for i, name in enumerate(FOLDER_IMAGES):
        target = root / "more" if i % 3 == 2 else root
        fmt, ext = ("JPEG", "jpg") if i % 2 else ("PNG", "png")
        (target / f"{name}.{ext}").write_bytes(encode(skimage_images[name], fmt))
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff this is not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def imported(server, folder):
    """The folder imported once: item name -> seed id."""
    run = admin(server, "add", str(folder), "--label", "test.import:3", "--source", "CASE-1",
                "--reason", "first import", "--json")
    assert run.returncode == 1, run.stderr  # 1: one item (the broken file) was rejected
    rows = json.loads(run.stdout)
    return run, {os.path.basename(r["item"]): r for r in rows}


def test_folder_import_adds_every_image_and_names_the_broken_file(imported):
    run, rows = imported
    assert len(rows) == len(FOLDER_IMAGES) + 1  # notes.txt is skipped, not sent
    assert rows["broken.jpg"]["status"] == "rejected"
    assert "JPEG" in rows["broken.jpg"]["error"]  # the server's reason, passed on
    added = [r for r in rows.values() if r["status"] == "added"]
    assert len(added) == len(FOLDER_IMAGES) and all(r["created"] for r in added)
    assert len({r["seed_id"] for r in added}) == len(FOLDER_IMAGES)
    summary = run.stderr
    assert f"added {len(FOLDER_IMAGES)}, already present 0, rejected 1" in summary
    assert "broken.jpg" in summary and "notes.txt" in summary  # rejected, and skipped


def test_rerun_adds_nothing_and_says_how_many_existed(server, folder, imported):
    again = admin(server, "add", str(folder), "--label", "test.import:3")
    assert again.returncode == 1  # the broken file is still rejected
    assert f"added 0, already present {len(FOLDER_IMAGES)}, rejected 1" in again.stderr
    assert "broken.jpg" in again.stderr
    assert "present" in again.stdout and "labels were not changed" in again.stdout


def test_csv_manifest_brings_labels_and_severities(server, tmp_path, skimage_images, encode):
    (tmp_path / "imgs").mkdir()
    for name in ("coins", "page"):
        (tmp_path / "imgs" / f"{name}.png").write_bytes(encode(skimage_images[name], "PNG"))
    manifest = tmp_path / "bank.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "labels", "severity", "source", "note"])
        w.writerow(["imgs/coins.png", "fraud.counterfeit:5;spam.scam", "2", "CASE-2", "coins"])
        w.writerow(["imgs/page.png", "spam.scam", "4", "", ""])
        w.writerow(["imgs/missing.png", "spam.scam", "", "", ""])
        w.writerow(["imgs/page.png", "Bad Label", "", "", ""])
    run = admin(server, "add", "--manifest", str(manifest), "--source", "CASE-DEFAULT", "--json")
    assert run.returncode == 1, run.stderr
    rows = json.loads(run.stdout)
    assert [r["status"] for r in rows] == ["added", "added", "rejected", "rejected"]
    assert "cannot read" in rows[2]["error"] and "bad label name" in rows[3]["error"]
    coins = json.loads(admin(server, "get", str(rows[0]["seed_id"]), "--json").stdout)
    assert {(x["name"], x["severity"]) for x in coins["labels"]} == {
        ("fraud.counterfeit", 5), ("spam.scam", 2)}
    assert (coins["source"], coins["note"], coins["added_by"]) == ("CASE-2", "coins", "alice")
    page = json.loads(admin(server, "--json", "get", str(rows[1]["seed_id"])).stdout)
    assert page["labels"] == [{"name": "spam.scam", "severity": 4}]
    assert page["source"] == "CASE-DEFAULT"  # an empty column takes the command line's


def test_edited_copy_is_found_by_lookup_with_the_right_label(server, imported, tmp_path,
                                                            skimage_images):
    _, rows = imported
    copy = tmp_path / "repost.jpg"
    copy.write_bytes(edited(skimage_images["coffee"]))
    run = admin(server, "lookup", str(copy))
    assert run.returncode == 0, run.stderr
    assert "MATCH" in run.stdout and "test.import" in run.stdout
    assert "None" not in run.stdout
    data = json.loads(admin(server, "lookup", str(copy), "--json").stdout)
    (verdict,) = [v for v in data[0]["verdicts"] if v["label"] == "test.import"]
    assert verdict["matched"]
    assert rows["coffee.jpg"]["seed_id"] in {n["seed_id"] for n in verdict["evidence"]}
    # evidence is listed once per seed and space
    line = next(x for x in run.stdout.splitlines() if "test.import" in x and "MATCH" in x)
    seed = rows["coffee.jpg"]["seed_id"]
    assert line.count(f"{seed} (image:effnet-lite0") == 1


def test_dry_run_reports_matches_and_writes_nothing(server, imported, tmp_path, skimage_images,
                                                    encode):
    copy = tmp_path / "repost.jpg"
    copy.write_bytes(edited(skimage_images["rocket"]))
    fresh = tmp_path / "fresh.png"
    fresh.write_bytes(encode(skimage_images["hubble_deep_field"], "PNG"))
    before = json.loads(admin(server, "stats", "--json").stdout)["op_seq"]
    run = admin(server, "add", str(copy), str(fresh), "--label", "x.y", "--dry-run", "--json")
    assert run.returncode == 0, run.stderr
    rows = {os.path.basename(r["item"]): r for r in json.loads(run.stdout)}
    assert rows["repost.jpg"]["status"] == "near"
    assert rows["repost.jpg"]["matches"][0]["label"] == "test.import"
    assert rows["fresh.png"]["status"] == "new"
    assert "dry run, nothing written" in run.stderr
    assert json.loads(admin(server, "stats", "--json").stdout)["op_seq"] == before


def test_remove_with_reason_history_restore_and_match_again(server, imported, tmp_path,
                                                           skimage_images):
    _, rows = imported
    seed = rows["chelsea.png"]["seed_id"]
    copy = tmp_path / "cat.jpg"
    copy.write_bytes(edited(skimage_images["chelsea"]))

    def matches() -> bool:
        data = json.loads(admin(server, "lookup", str(copy), "--json").stdout)
        return any(v["label"] == "test.import" and v["matched"] and
                   seed in {n["seed_id"] for n in v["evidence"]} for v in data[0]["verdicts"])

    assert matches()
    run = admin(server, "remove", str(seed), "999999", "--reason", "false positive, see CASE-9")
    assert run.returncode == 1  # one id was unknown: partly done
    assert "removed" in run.stdout and "not found" in run.stdout
    assert not matches()

    history = admin(server, "history", str(seed))
    assert history.returncode == 0, history.stderr
    remove_line = next(x for x in history.stdout.splitlines() if " remove " in x)
    assert "alice" in remove_line and "false positive, see CASE-9" in remove_line
    assert "first import" in history.stdout  # the add, with its reason

    restore = admin(server, "restore", str(seed), "--reason", "it was right after all")
    assert restore.returncode == 0, restore.stderr
    assert "restored seed" in restore.stdout
    assert matches()
    ops = json.loads(admin(server, "ops", "--seed", str(seed), "--json").stdout)
    assert [o["kind"] for o in ops] == ["restore", "remove", "add"]
    assert ops[0]["actor"] == "alice" and ops[0]["reason"] == "it was right after all"
    mine = json.loads(admin(server, "ops", "--actor", "alice", "--kind", "remove", "--json").stdout)
    assert [o["seed_id"] for o in mine] == [seed]


def test_pdq_add_and_lookup_print_their_results(server):
    pdq = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
    add = admin(server, "add", "--pdq", pdq, "--label", "partner.hash:5")
    assert add.returncode == 0, add.stderr
    assert "pdq[0]" in add.stdout and "added" in add.stdout and "partner.hash:5" in add.stdout
    rows = json.loads(admin(server, "add", "--pdq", pdq, "--label", "partner.hash:5",
                            "--json").stdout)
    assert rows[0]["status"] == "present" and rows[0]["seed_id"]
    look = admin(server, "lookup", "--pdq", pdq)
    assert look.returncode == 0, look.stderr
    assert "pdq[0]" in look.stdout and "partner.hash" in look.stdout and "MATCH" in look.stdout
    data = json.loads(admin(server, "lookup", "--pdq", pdq, "--json").stdout)
    assert data and any(v["matched"] for v in data[0]["verdicts"])


def test_cli_defects_stay_fixed(server, imported):
    # --json in any position
    assert json.loads(admin(server, "whoami", "--json").stdout) == {"name": "alice",
                                                                    "role": "analyst"}
    assert json.loads(admin(server, "--json", "whoami").stdout)["name"] == "alice"
    # --limit 0 is refused instead of printing a row
    assert admin(server, "list", "--limit", "0").returncode == 2
    assert len(json.loads(admin(server, "list", "--limit", "2", "--json").stdout)) == 2
    # labels follow the rule; severity 0 is an error, not 1
    bad = admin(server, "add", "--text", "x", "--label", "Spam Scam:3")
    assert bad.returncode == 2 and "bad label name" in bad.stderr
    zero = admin(server, "add", "--pdq", "ab" * 32, "--label", "spam.scam:0")
    assert zero.returncode == 2 and "severity" in zero.stderr
    # a reason is required for removals, relabels and restores
    assert admin(server, "remove", "1").returncode == 2
    # a reader never gets content
    denied = admin(server, "content", "1", token=TOKENS["reader"])
    assert denied.returncode == 4 and "PermissionDenied" in denied.stderr
    # get prints no None
    assert "None" not in admin(server, "get", "1").stdout


def test_api_merges_labels_only_when_asked_and_bounds_free_text(server, skimage_images, encode):
    data = encode(skimage_images["grass"], "PNG")
    with server.client("analyst") as analyst, server.client("reader") as reader:
        [first] = analyst.add_seeds([Item(image=data)], [Label("spam.scam", 2)])
        [same] = analyst.add_seeds([Item(image=data)], [Label("fraud.crypto", 4)])
        assert (same.seed_id, same.created, same.labels_merged) == (first.seed_id, False, False)
        assert same.labels == (Label("spam.scam", 2),)
        [merged] = analyst.add_seeds([Item(image=data)], [Label("fraud.crypto", 4)],
                                     merge_labels=True, reason="also crypto fraud")
        assert merged.labels_merged
        assert set(reader.get_seed(first.seed_id).labels) == {Label("spam.scam", 2),
                                                             Label("fraud.crypto", 4)}
        with pytest.raises(LimitExceeded, match="max_reason_chars=200"):
            analyst.remove_seeds([first.seed_id], reason="x" * 201)
        with pytest.raises(InvalidArgument, match="severity"):
            analyst.add_seeds([Item(image=data)], [Label("spam.scam", 0)])
        with pytest.raises(PermissionDenied):
            reader.content(first.seed_id)
        with pytest.raises(PermissionDenied):
            reader.restore(first.seed_id, reason="no")
        with pytest.raises(PermissionDenied):
            reader.list_ops()
        content = analyst.content(first.seed_id)
        assert content.data == data and content.media_type == "image/png"
        seed, ops = analyst.history(first.seed_id)
        assert [o.kind.name for o in ops] == ["ADD", "RELABEL"]
        assert ops[1].reason == "also crypto fraud" and ops[1].previous_labels == (
            Label("spam.scam", 2),)


def test_restored_seed_still_matches_after_a_restart(server, server_factory, imported, tmp_path,
                                                     skimage_images):
    _, rows = imported
    seed = rows["clock.png"]["seed_id"]
    assert admin(server, "remove", str(seed), "--reason", "check").returncode == 0
    assert admin(server, "restore", str(seed), "--reason", "undo").returncode == 0
    data_dir = server.data_dir
    server.close()  # the module's server: this test runs last
    again = server_factory("analyst-cli-restart", CONFIG, data_dir=data_dir)
    copy = tmp_path / "clock.jpg"
    copy.write_bytes(edited(skimage_images["clock"]))
    data = json.loads(admin(again, "lookup", str(copy), "--json").stdout)
    assert any(v["label"] == "test.import" and v["matched"] and
               seed in {n["seed_id"] for n in v["evidence"]} for v in data[0]["verdicts"])
    history = json.loads(admin(again, "history", str(seed), "--json").stdout)
    assert [o["kind"] for o in history["ops"]] == ["add", "remove", "restore"]
