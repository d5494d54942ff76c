"""Items that copy few-shot or training examples are caught, even with small edits."""

from __future__ import annotations

import pytest

from labelgate_quality.leakage import LeakIndex, LeakKind, duplicate_groups, find_leaks, normalise, text_hash

pytestmark = pytest.mark.unit

FEW_SHOT = {
    "ex1": "Hi team, the export button crashes the app every time I click it on Windows 11.",
    "ex2": "I was charged twice for my subscription this month, please refund one payment.",
}


def test_normalised_hash_ignores_case_spacing_and_punctuation() -> None:
    assert normalise("  Hello,\tWORLD!! ") == "hello world"
    assert text_hash("Hello, world") == text_hash("hello   WORLD!")
    assert text_hash("hello world") != text_hash("hello word")


def test_exact_and_near_duplicates_of_few_shot_examples_are_flagged() -> None:
    items = {
        "copy": FEW_SHOT["ex1"].upper(),
        "edited": "I was charged twice for my subscription this month, please refund a payment!",
        "new": "How do I change the language of the dashboard?",
    }
    leaks = {leak.item_id: leak for leak in find_leaks(items, FEW_SHOT, threshold=0.8)}
    assert set(leaks) == {"copy", "edited"}
    assert leaks["copy"].kind is LeakKind.exact
    assert leaks["copy"].reference_id == "ex1"
    assert leaks["edited"].kind is LeakKind.near
    assert leaks["edited"].reference_id == "ex2"
    assert 0.8 <= leaks["edited"].jaccard < 1.0


def test_threshold_controls_how_near_is_near() -> None:
    items = {"loose": "I was charged twice this month, refund please"}
    assert find_leaks(items, FEW_SHOT, threshold=0.9) == []
    assert find_leaks(items, FEW_SHOT, threshold=0.3)[0].reference_id == "ex2"


def test_chunking_does_not_change_the_result() -> None:
    items = {f"i{k}": f"{FEW_SHOT['ex2']} {k}" for k in range(20)}
    assert find_leaks(items, FEW_SHOT, chunk=3) == find_leaks(items, FEW_SHOT, chunk=512)


def test_empty_and_short_texts_do_not_break_it() -> None:
    assert find_leaks({"a": "", "b": "ok"}, {"r": "ok!"}) == [find_leaks({"b": "ok"}, {"r": "ok"})[0]]
    assert find_leaks({}, FEW_SHOT) == []


def test_duplicate_groups() -> None:
    groups = duplicate_groups({"a": "Same text.", "b": "same TEXT", "c": "other"})
    assert groups == [["a", "b"]]


def test_leak_index_flags_exact_and_near_duplicates_of_its_references_one_text_at_a_time() -> None:
    index = LeakIndex(threshold=0.8)
    base = "Dear customer, your account statement for March is attached. Regards, the billing team of Example Co."
    index.add({"ex-1": base, "ex-2": "Meeting moved to Thursday at ten in the large room, bring the slides."})
    assert len(index) == 2
    exact = index.check(base.upper().replace(",", " ,"))
    assert exact is not None
    assert exact.kind is LeakKind.exact
    assert exact.reference_id == "ex-1"
    near = index.check(base.replace("March", "April"))
    assert near is not None
    assert near.kind is LeakKind.near
    assert near.reference_id == "ex-1"
    assert 0.8 <= near.jaccard < 1.0
    assert index.check("A completely different note about lunch plans for the team tomorrow.") is None


def test_leak_index_grows_and_agrees_with_the_batch_search() -> None:
    index = LeakIndex(threshold=0.6)
    assert index.check("anything at all") is None  # no references yet
    refs = {f"r{i}": f"order {i} shipped to warehouse number {i * 7} on schedule, tracking code {i * 13}"
            for i in range(20)}
    index.add(refs)
    index.add({"r0": refs["r0"]})  # the same text again changes nothing
    assert len(index) == 20
    item = refs["r5"].replace("on schedule", "late")
    batch = find_leaks({"x": item}, refs, threshold=0.6)
    single = index.check(item)
    assert single is not None
    assert [single.reference_id] == [leak.reference_id for leak in batch]
    assert single.jaccard == pytest.approx(batch[0].jaccard, abs=0.02)
