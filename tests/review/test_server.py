"""The grading server over real HTTP: token checks, blindness, grading, stamps, restart."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from review_inputs import N_CANDIDATES

from lensdask.formats.files import TableError as ReviewInputError
from lensdask.review.grades import candidate_key
from lensdask.review.server import make_server


def get(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def post(url: str, payload: object) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_binds_to_localhost_by_default(grading):
    assert grading.server_address[0] == "127.0.0.1"
    assert grading.url.startswith("http://127.0.0.1:")


def test_without_a_valid_token_nothing_is_shown_or_written(grading, review_data):
    store = grading.app.store
    store.add_grader("ann")
    key = candidate_key(review_data.candidates["ID"].iloc[0])
    for path in ("", "?token=", "?token=wrong"):
        status, body, _ = get(grading.url + path)
        assert status == 403 and b"No access" in body and b"<script" not in body
        status, body, _ = get(grading.url + "api/state" + path)
        assert status == 403 and b"items" not in body
        status, body, _ = get(grading.url + f"stamp/{key}" + path)
        assert status == 403 and not body.startswith(b"\x89PNG")
        status, reply = post(grading.url + "api/grade" + path, {"key": key, "grade": "A"})
        assert status == 403 and reply == {"error": "invalid or missing access token"}
    assert store.grades().empty


def test_state_is_blind_ordered_per_grader_and_own_grades_only(grading, review_data):
    store = grading.app.store
    ann, bob = store.add_grader("ann"), store.add_grader("bob")
    status, body, headers = get(grading.url + f"api/state?token={ann}")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    state = json.loads(body)
    assert state["grader"] == "ann" and state["total"] == N_CANDIDATES and state["graded"] == 0
    assert [item["id"] for item in state["items"]] == store.order(
        "ann", review_data.candidates["ID"]
    )
    text = body.decode()
    assert "p_cnn" not in text and "model" not in text
    for p_cnn in review_data.candidates["p_cnn"]:
        assert f"{p_cnn:.3f}" not in text
    first = state["items"][0]
    status, reply = post(
        grading.url + f"api/grade?token={bob}", {"key": first["key"], "grade": "D"}
    )
    assert status == 200 and reply == {"graded": 1, "total": N_CANDIDATES}
    state = json.loads(get(grading.url + f"api/state?token={ann}")[1])
    assert all(item["grade"] is None for item in state["items"])  # bob's grade is not shown
    bob_state = json.loads(get(grading.url + f"api/state?token={bob}")[1])
    assert [item["id"] for item in bob_state["items"]] != [item["id"] for item in state["items"]]
    assert {item["key"]: item["grade"] for item in bob_state["items"]}[first["key"]] == "D"


def test_stamps_are_served_as_png(grading, review_data):
    token = grading.app.store.add_grader("ann")
    index = grading.app.by_key
    key, candidate = next(iter(index.items()))
    for kind in ("colour", "mono"):
        status, body, headers = get(grading.url + f"stamp/{key}?kind={kind}&token={token}")
        assert status == 200 and headers["Content-Type"] == "image/png"
        assert body == (review_data.stamps / getattr(candidate, f"{kind}_png")).read_bytes()
    assert get(grading.url + f"stamp/{key}?kind=other&token={token}")[0] == 404
    assert get(grading.url + f"stamp/{'0' * 16}?token={token}")[0] == 404


def test_bad_grades_are_refused_with_a_reason(grading):
    store = grading.app.store
    token = store.add_grader("ann")
    key = next(iter(grading.app.by_key))
    url = grading.url + f"api/grade?token={token}"
    assert post(url, {"key": key, "grade": "E"}) == (
        400,
        {"error": "grade 'E' is not one of A, B, C, D"},
    )
    assert post(url, {"key": "f" * 16, "grade": "A"})[0] == 400
    assert post(url, ["A"])[0] == 400
    assert store.grades().empty


def test_grades_survive_a_server_restart(review_data, tmp_path):
    db = tmp_path / "grades.sqlite"
    ids = review_data.candidates["ID"].tolist()
    server = make_server(db, review_data.stamps, ids, port=0)
    token = server.app.store.add_grader("ann")
    server.start()
    try:
        state = json.loads(get(server.url + f"api/state?token={token}")[1])
        for item, grade in zip(state["items"][:3], "ABC", strict=False):
            assert (
                post(server.url + f"api/grade?token={token}", {"key": item["key"], "grade": grade})[
                    0
                ]
                == 200
            )
    finally:
        server.stop()
    again = make_server(db, review_data.stamps, ids, port=0)
    again.start()
    try:
        after = json.loads(get(again.url + f"api/state?token={token}")[1])
    finally:
        again.stop()
    assert after["graded"] == 3
    assert [item["grade"] for item in after["items"][:4]] == ["A", "B", "C", None]
    assert [item["id"] for item in after["items"]] == [item["id"] for item in state["items"]]


def test_candidates_without_stamps_are_refused(review_data, tmp_path):
    with pytest.raises(ReviewInputError, match=r"1 of 2 candidates have no stamps.*'nope'"):
        make_server(
            tmp_path / "g.sqlite",
            review_data.stamps,
            ["nope", review_data.candidates["ID"][0]],
            port=0,
        )
