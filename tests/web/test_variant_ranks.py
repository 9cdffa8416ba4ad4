"""A set's variants (`variants: N`, `keep: all`) on the dashboard: each card says which variant of how
many it is and its rank among the set as published so far (provisional until the set is complete),
`/gallery?variants=<of>` lists the set best first, `/api/job` carries the variant with its rank; the
rank itself (catalog.ranks) in the quality gate's order."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from conftest import Folders
from i2v_watcher.catalog.ranks import Placing, Variant, placings, ranked, variant
from i2v_watcher.judge import rank
from i2v_watcher.web.gallery import REFRESH_S
from web.conftest import WebServer
from web.test_verdicts import cards, get, publish

FOX, OWL = "20261201T000000Z-00000001", "20261205T000000Z-00000005"


def judged(verdict: str, symptoms: list[str], drift: float) -> dict[str, Any]:
    """A `quality` in the gate's shape."""
    scores = {"motion": 0.5, "frozen": 0.0, "flicker": 0.01, "black": 0.0, "drift": drift, "sharpness": 1.0}
    judgement = {"scores": scores, "symptoms": symptoms, "verdict": verdict}
    return {**judgement, "attempts": [{"seed": 1, "changes": {}, **judgement}]}


def publish_variant(folders: Folders, name: str, day: int, of: str, index: int, count: int,
                    quality: dict[str, Any] | None) -> None:
    publish(folders.outbox, name, day, None, variant={"of": of, "name": f"team/{name.partition('.')[0]}",
                                                      "index": index, "count": count},
            **({"quality": quality} if quality else {}))


def placing(card: str) -> str:
    found = re.search(r'<p class="variant">(.*?)</p>', card, re.S)
    assert found, card
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


def test_cards_filter_and_api_rank_the_published_set(folders: Folders, web: Callable[..., WebServer]) -> None:
    server = web()
    # fox: three variants, two published so far: v2 has fewer symptoms than the first.
    publish_variant(folders, "fox", 1, FOX, 1, 3, judged("fail", ["no_motion", "flicker"], 0.1))
    publish_variant(folders, "fox.v2", 2, FOX, 2, 3, judged("fail", ["flicker"], 0.3))
    publish_variant(folders, "owl", 5, OWL, 1, 2, judged("pass", [], 0.2))  # another set
    publish(folders.outbox, "cat", 6, None)  # no variant
    publish(folders.outbox, "odd", 7, None, variant={"of": FOX, "name": "team/odd", "index": 9, "count": 3})

    shown = cards(get(server, "/gallery")[1])
    assert placing(shown["fox.v2"]) == "variant 2 of 3 · rank 1 provisional: 2 of 3 published"
    assert placing(shown["fox"]) == "variant 1 of 3 · rank 2 provisional: 2 of 3 published"
    assert placing(shown["owl"]) == "variant 1 of 2 · rank 1 provisional: 1 of 2 published"
    assert f'href="/gallery?variants={FOX}"' in shown["fox"]
    assert 'class="variant"' not in shown["cat"] and 'class="variant"' not in shown["odd"]  # not a set's

    time.sleep(REFRESH_S + 0.1)  # the third arrives last but is the best: no symptom
    publish_variant(folders, "fox.v3", 3, FOX, 3, 3, judged("pass", [], 0.4))
    status, page = get(server, f"/gallery?variants={FOX}")
    assert status == 200 and "3 clips, the variants of team/fox, best first" in page
    assert list(cards(page)) == ["fox.v3", "fox.v2", "fox"]  # best first, not newest first
    assert [placing(card) for card in cards(page).values()] == [
        "variant 3 of 3 · rank 1", "variant 2 of 3 · rank 2", "variant 1 of 3 · rank 3"]
    assert "provisional" not in page
    assert list(cards(get(server, f"/gallery?variants={FOX}&verdict=fail")[1])) == ["fox.v2", "fox"]

    status, page = get(server, "/gallery?variants=team/fox%0A")
    assert status == 200 and "6 clips" in page and "variants=&#39;team/fox\\n&#39; (not a job id)" in page

    answer = json.loads(get(server, "/api/job?job=fox.v2")[1])
    assert answer["variant"] == {"of": FOX, "name": "team/fox", "index": 2, "count": 3, "rank": 2,
                                 "published": 3, "provisional": False}
    assert json.loads(get(server, "/api/job?job=owl")[1])["variant"]["provisional"] is True
    assert json.loads(get(server, "/api/job?job=cat")[1])["variant"] is None


def test_rank_is_the_gates_order_then_the_index() -> None:
    one = Variant(of=FOX, name="fox", index=1, count=4)
    members = [("a", one, judged("fail", ["drift"], 0.2)),
               ("b", Variant(FOX, "fox", 2, 4), judged("fail", ["drift"], 0.1)),
               ("c", Variant(FOX, "fox", 3, 4), None),  # not judged: after every judged one
               ("d", Variant(FOX, "fox", 4, 4), judged("fail", ["blur", "drift", "no_motion"], 0.0)),
               ("e", Variant(FOX, "fox", 1, 4), judged("fail", ["drift"], 0.2))]  # variant 1 again: a retry
    assert [(key, placing.rank) for key, placing in ranked(members)] == [
        ("b", 1), ("a", 2), ("e", 3), ("d", 4), ("c", 5)]
    assert ranked(members)[0][1] == Placing(rank=1, published=4, count=4)
    assert not Placing(rank=1, published=4, count=4).provisional
    # The same order as the gate's keep: best picks by.
    assert rank(judged("fail", ["drift"], 0.1)) < rank(judged("fail", ["drift"], 0.2))
    tie = [("x", Variant(FOX, "fox", 2, 2), judged("pass", [], 0.5)),
           ("y", Variant(FOX, "fox", 1, 2), judged("pass", [], 0.5)),
           ("z", Variant(OWL, "owl", 1, 3), judged("fail", ["blur"], 0.9))]  # another set
    assert placings(tie) == {"y": Placing(1, 2, 2), "x": Placing(2, 2, 2), "z": Placing(1, 1, 3)}
    # Hand edits: not a variant at all.
    for odd in ({"of": FOX, "name": "fox", "index": True, "count": 2}, {"of": "x", "name": "fox", "index": 1,
                "count": 2}, {"of": FOX, "name": "fox", "index": 3, "count": 2}, "fox", None):
        assert variant(odd) is None
    assert variant({"of": FOX, "name": "fox", "index": 2, "count": 2, "new": 1}) == Variant(FOX, "fox", 2, 2)
