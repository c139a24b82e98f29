"""roicurate review without a browser: the answers file (roicurate/review_answers.py), the web API behind its token
(Starlette's TestClient), and what every later apply / revert / status / train does with the answers."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import cli_run, one_line_error
from roicurate import RoicurateError, review_answers
from roicurate.labels import mask_fingerprint
from roicurate.plugins import sources
from roicurate.sources import read_units

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "s2p_sim2" / "suite2p" / "plane0"
TOKEN = "t0k3n-for-tests_0123456789abcdef"


@pytest.fixture
def plane(tmp_path):
    dst = tmp_path / "plane0"
    shutil.copytree(EXAMPLE, dst)
    return dst


@pytest.fixture
def session(plane, tiny_model):
    from roicurate_plugins.review import open_session
    src, unit, s = open_session(str(plane), str(tiny_model / "tiny.json"))
    yield s
    shutil.rmtree(s.cache, ignore_errors=True)


@pytest.fixture
def client(session):
    from starlette.testclient import TestClient

    from roicurate_plugins.review.app import make_app
    return TestClient(make_app(session, TOKEN), base_url="http://127.0.0.1:8000")


def iscell(plane):
    return np.load(plane / "iscell.npy")


# ---- the token and what is served ------------------------------------------------------------------------------
def test_every_request_without_the_token_is_refused(client):
    assert client.get(f"/{TOKEN}/").status_code == 200
    for path in ("/", "/api/state", f"/{TOKEN[:-1]}/api/state", f"/{TOKEN}x/api/state", "/static/app.js",
                 f"/api/state?token={TOKEN}"):
        r = client.get(path)
        assert r.status_code == 403, path
        assert "answers" not in r.text
    r = client.post("/api/answer", json={"roi": 0, "label": 1})
    assert r.status_code == 403


def test_another_host_name_is_refused(client):
    """A page elsewhere that rebinds its DNS name to 127.0.0.1 sends its own Host header."""
    assert client.get(f"/{TOKEN}/api/state", headers={"host": "evil.example:8000"}).status_code == 403
    assert client.get(f"/{TOKEN}/api/state", headers={"host": "localhost:8000"}).status_code == 200


def test_no_file_outside_the_page_is_served(client, plane):
    (plane.parent / "secret.txt").write_text("secret")
    assert client.get(f"/{TOKEN}/static/app.js").status_code == 200
    for name in ("..%2F..%2F..%2Fetc%2Fpasswd", "..%2Fsecret.txt", "..%2F__init__.py", "%2Fetc%2Fpasswd",
                 "session.py", "..", "index.html%00.js"):
        r = client.get(f"/{TOKEN}/static/{name}")
        assert r.status_code in (403, 404), name         # refused before or by the route
        assert "secret" not in r.text and "root:" not in r.text
    assert client.get(f"/{TOKEN}/img/..%2F..%2Fsecret.txt/0.png").status_code == 404
    assert client.get(f"/{TOKEN}/img/stat/0.png").status_code == 404


def test_bad_roi_numbers_and_labels_are_4xx(client, plane):
    for path in ("api/roi/34", "api/roi/-1", "api/roi/x", "img/crop/34.png", "img/why/99.png", "api/trace/34"):
        assert client.get(f"/{TOKEN}/{path}").status_code == 404, path
    for body in ({"roi": 34, "label": 1}, {"roi": -1, "label": 0}):
        assert client.post(f"/{TOKEN}/api/answer", json=body).status_code == 404
    for body in ({"roi": 1, "label": 2}, {"roi": "1", "label": 1}, {"roi": 1.0, "label": 1}, {"roi": 1},
                 {"roi": 1, "label": True}, [1, 1]):
        assert client.post(f"/{TOKEN}/api/answer", json=body).status_code == 400, body
    assert client.post(f"/{TOKEN}/api/answer", content=b"not json").status_code == 400
    assert not (plane / "roicurate_review.json").exists()


def test_pictures_and_trace(client):
    for path in ("img/crop/3.png", "img/fov.png"):
        r = client.get(f"/{TOKEN}/{path}")
        assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n", path
    t = client.get(f"/{TOKEN}/api/trace/3").json()
    F = np.load(EXAMPLE / "F.npy")
    assert t["frames"] == F.shape[1]
    assert min(t["min"]) == pytest.approx(F[3].min(), abs=1e-3) and max(t["max"]) == pytest.approx(F[3].max(), abs=1e-3)


# ---- answers: written at once, undo, resume -----------------------------------------------------------------------
def test_answer_is_written_at_once_with_the_rois_it_is_for(client, plane, session):
    s = client.get(f"/{TOKEN}/api/state").json()
    first, second = s["order"][:2]
    assert s["progress"] == {"reviewed": 0, "left": 34, "errors_found": 0,
                             "errors_expected_left": pytest.approx(s["progress"]["errors_expected_left"])}
    wrong = int(not s["model_accepted"][first])              # the opposite of the model: an error found
    s = client.post(f"/{TOKEN}/api/answer", json={"roi": first, "label": wrong}).json()
    s = client.post(f"/{TOKEN}/api/answer", json={"roi": second, "label": int(s["model_accepted"][second])}).json()
    data = (plane / "roicurate_review.json").read_bytes()
    record = json.loads(data)
    assert data == review_answers.encode(record)            # sorted keys, indent 1, final newline
    assert data.startswith(b'{\n "answers": [\n  {\n   "label": ') and data.endswith(b'"version": 1\n}\n')
    assert record["format"] == "roicurate-review" and record["version"] == 1 and record["rois"] == 34
    (_, _, rs), = read_units([plane])
    assert record["masks_sha256"] == mask_fingerprint(rs)
    expected = [(first, wrong), (second, s["model_accepted"][second])]
    assert [(a["roi"], a["label"]) for a in record["answers"]] == expected
    assert s["progress"]["reviewed"] == 2 and s["progress"]["left"] == 32 and s["progress"]["errors_found"] == 1
    assert not list(plane.glob(".*.tmp"))                   # the temp file of the atomic write is gone


def test_a_new_answer_replaces_the_old_and_undo_takes_back_the_last(client, plane):
    order = client.get(f"/{TOKEN}/api/state").json()["order"]
    a, b = order[:2]
    client.post(f"/{TOKEN}/api/answer", json={"roi": a, "label": 1})
    client.post(f"/{TOKEN}/api/answer", json={"roi": b, "label": 0})
    client.post(f"/{TOKEN}/api/answer", json={"roi": a, "label": 0})
    answers = json.loads((plane / "roicurate_review.json").read_text())["answers"]
    assert [(x["roi"], x["label"]) for x in answers] == [(b, 0), (a, 0)]
    s = client.post(f"/{TOKEN}/api/undo").json()
    assert s["undone"] == a and s["human"][a] == -1 and s["human"][b] == 0
    s = client.post(f"/{TOKEN}/api/undo").json()
    assert s["undone"] == b and s["answers"] == []
    s = client.post(f"/{TOKEN}/api/undo").json()
    assert s["undone"] is None
    assert json.loads((plane / "roicurate_review.json").read_text())["answers"] == []


def test_a_new_session_resumes_with_the_answers_and_the_same_order(plane, tiny_model, session):
    from roicurate_plugins.review import open_session
    order = session.state()["order"]
    cur = session.curation                                   # the least sure first: closest to the threshold
    assert order == np.argsort(np.abs(cur.accept_score - cur.threshold), kind="stable").tolist()
    for roi in order[:3]:
        session.answer(roi, 1)
    _, _, again = open_session(str(plane), str(tiny_model / "tiny.json"))
    shutil.rmtree(again.cache)
    s = again.state()
    assert s["order"] == order
    assert [a["roi"] for a in s["answers"]] == order[:3]
    assert next(r for r in s["order"] if s["human"][r] < 0) == order[3]     # where the page resumes


def test_answers_for_other_rois_are_never_applied_and_are_kept_aside(plane, session):
    (plane / "roicurate_review.json").write_bytes(review_answers.encode(
        {"format": "roicurate-review", "version": 1, "rois": 34, "masks_sha256": "0" * 64,
         "answers": [{"roi": 1, "label": 1, "time": "t"}]}))
    (src, unit, rs), = read_units([plane])
    assert rs.human is None and "other ROI masks" in rs.origin["review_problem"]
    session.answer(2, 0)
    kept = list(plane.glob("roicurate_review-stale-*.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text())["masks_sha256"] == "0" * 64
    assert [a["roi"] for a in json.loads((plane / "roicurate_review.json").read_text())["answers"]] == [2]


def test_a_broken_answers_file_is_one_line(plane):
    (plane / "roicurate_review.json").write_text('{"format": "something else"}')
    one_line_error(lambda: read_units([plane]), "roicurate_review.json", "not a roicurate review file")


def test_review_file_names():
    s2p, caiman, nwb = (sources()[k] for k in ("suite2p", "caiman", "nwb"))
    assert s2p.review_path(EXAMPLE) == EXAMPLE / "roicurate_review.json"
    assert caiman.review_path("/d/cnm.hdf5") == Path("/d/cnm.roicurate-review.json")
    assert nwb.review_path("/d/x.nwb") == Path("/d/x.roicurate-review.json")
    assert nwb.review_path("/d/x.nwb::ophys/ImageSegmentation/PlaneSegmentation") == \
        Path("/d/x.ophys_ImageSegmentation_PlaneSegmentation.roicurate-review.json")


# ---- a human answer beats the model, in every later run ---------------------------------------------------------
def test_apply_writes_every_answer_and_revert_then_apply_keeps_them(plane, tiny_model, session):
    model = str(tiny_model / "tiny.json")
    probe = session.curation.model_accepted
    flip = [int(i) for i in session.order[:4]]
    for i in flip:
        session.answer(i, int(not probe[i]))                # every answer overrules the model
    answers_bytes = (plane / "roicurate_review.json").read_bytes()
    original = (plane / "iscell.npy").read_bytes()
    for run in range(2):
        line = cli_run("apply", plane, "--model", model).output
        assert "; 4 set by your review answers (4 overruling the model)" in line, line
        out = iscell(plane)
        assert out.dtype == np.float64 and out.shape == (34, 2)
        for i in flip:
            assert out[i, 0] == float(not probe[i])
        rest = np.setdiff1d(np.arange(34), flip)
        assert (out[rest, 0] == probe[rest]).all()
        rec = json.loads((plane / "roicurate.json").read_text())
        assert rec["human"] == {"reviewed": 4, "cell": int(sum(not probe[i] for i in flip)),
                                "not_cell": int(sum(bool(probe[i]) for i in flip)), "overruled": 4}
        assert "reviewed 4 of 34" in cli_run("status", plane).output
        cli_run("revert", plane)
        assert (plane / "iscell.npy").read_bytes() == original       # the pipeline's own verdict
        assert (plane / "roicurate_review.json").read_bytes() == answers_bytes


def test_curate_in_python_takes_the_answers_too(plane, tiny_model):
    from roicurate.curation import curate
    from roicurate.models import Classifier
    (src, unit, rs), = read_units([plane])
    review_answers.answer(src, unit, rs, 5, 1)
    review_answers.answer(src, unit, rs, 6, 0)
    (_, _, rs), = read_units([plane])
    clf = Classifier.load(str(tiny_model / "tiny.json"))
    cur = curate(rs, clf, threshold=1.0)                   # the model accepts nothing
    assert cur.accepted[5] and not cur.accepted[6] and cur.accepted.sum() == 1
    assert cur.summary()["human"] == {"reviewed": 2, "cell": 1, "not_cell": 1, "overruled": 1}
    assert cur.expected_error[5] == 0 and cur.expected_error[6] == 0
    with pytest.raises(RoicurateError):
        review_answers.answer(src, unit, rs, 34, 1)


def test_answers_are_labels_for_train_and_evaluate(plane, tiny_model):
    from roicurate.training.data import load_labelled
    (src, unit, rs), = read_units([plane])
    review_answers.answer(src, unit, rs, 0, 0)
    review_answers.answer(src, unit, rs, 1, 1)
    pipeline = np.load(plane / "iscell.npy")[:, 0] > 0.5
    (labelled,) = load_labelled([plane])                      # over Suite2p's verdict: the answers replace it
    expected = pipeline.astype(np.int64)
    expected[0], expected[1] = 0, 1
    assert (labelled.labels == expected).all() and "roicurate_review.json" in labelled.origin["label_source"]
    cli_run("apply", plane, "--model", str(tiny_model / "tiny.json"))
    (labelled,) = load_labelled([plane])                      # roicurate's own verdict is no label: answers only
    assert len(labelled) == 2 and labelled.labels.tolist() == [0, 1] and labelled.origin["roi_index"] == [0, 1]


def test_caiman_answers_reach_idx_components(copy_caiman, tiny_model):
    import h5py

    from conftest import save_tiny_model
    path = copy_caiman("evaluated", "cnm.hdf5")
    (src, unit, rs), = read_units([path])
    assert src.review_path(unit) == path.with_name("cnm.roicurate-review.json")
    review_answers.answer(src, unit, rs, 0, 0)
    review_answers.answer(src, unit, rs, 1, 1)
    model = save_tiny_model(path.parent / "m", "caiman")
    cli_run("apply", path, "--model", model, "--threshold", "1")           # the model accepts nothing
    with h5py.File(path, "r") as f:
        assert f["estimates/idx_components"][()].tolist() == [1]
        assert json.loads(f["estimates"].attrs["roicurate_human"]) == {"reviewed": 2, "cell": 1, "not_cell": 1,
                                                                      "overruled": 1}
