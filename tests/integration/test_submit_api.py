"""Submitting jobs over HTTP: every bad input is a 4xx problem+json, never a 500."""

from __future__ import annotations

import io
import json
import threading
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.schemas import JobSpec
from service.submit import FrameFile
from service.submit import submit as submit_job
from tests.support.jobs import submit, wait_status

BILLING = {"columns": {"userId": [1, 2, 1], "amount": [1.5, 2.0, 3.0]}}


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"]
    return body


def test_submit_json_runs_to_completion(client: TestClient) -> None:
    response = client.post("/jobs", json={"pipeline": "billing_rollup", "frame": BILLING})
    assert response.status_code == 202
    body = response.json()
    assert response.headers["location"] == f"/jobs/{body['id']}"
    assert response.headers["retry-after"]
    assert body["status"] == "queued" and body["input"]["rows"] == 3
    done = wait_status(client, body["id"])
    assert done["status"] == "completed", done
    assert done["result"]["rows"] == 2
    # the pipeline's last message is kept, even when it came just before the end
    assert done["progress"]["percent"] == 100 and done["progress"]["message"] == "aggregating"
    result = client.get(f"/jobs/{body['id']}/result").json()
    assert result["rows"] == [
        {"user_id": 1, "total": 4.5, "n": 2},
        {"user_id": 2, "total": 2.0, "n": 1},
    ]


def test_rows_frame_and_field_names(client: TestClient) -> None:
    frame = {"rows": [{"user_id": 7, "amount": 1}, {"user_id": 7, "amount": 2}]}
    body = submit(client, "billing_rollup", frame)
    done = wait_status(client, body["id"])
    assert done["status"] == "completed"
    assert client.get(f"/jobs/{body['id']}/result").json()["rows"] == [
        {"user_id": 7, "total": 3.0, "n": 2}
    ]


def test_multipart_csv_and_parquet(client: TestClient) -> None:
    csv = b"userId,amount\n1,2.5\n2,3\n1,1\n"
    spec = json.dumps({"pipeline": "billing_rollup"})
    r1 = client.post("/jobs", data={"spec": spec}, files={"frame": ("f.csv", csv, "text/csv")})
    sink = io.BytesIO()
    pq.write_table(pa.table({"userId": [1, 2, 1], "amount": [2.5, 3.0, 1.0]}), sink)
    r2 = client.post(
        "/jobs",
        data={"spec": spec},
        files={"frame": ("f.parquet", sink.getvalue(), "application/octet-stream")},
    )
    results = []
    for response in (r1, r2):
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        assert wait_status(client, job_id)["status"] == "completed"
        results.append(client.get(f"/jobs/{job_id}/result").json()["rows"])
    assert (
        results[0]
        == results[1]
        == [
            {"user_id": 1, "total": 3.5, "n": 2},
            {"user_id": 2, "total": 3.0, "n": 1},
        ]
    )


@pytest.mark.parametrize(
    ("frame", "column", "rows"),
    [
        ({"columns": {"userId": [1, "x", 3], "amount": [1.0, 2.0, 3.0]}}, "userId", [1]),
        ({"columns": {"userId": [1, 2, 3], "amount": [1.0, None, 3.0]}}, "amount", [1]),
        ({"columns": {"userId": [1, 2.5, 3], "amount": [1.0, 2.0, 3.0]}}, "userId", [1]),
    ],
)
def test_bad_values_name_column_and_rows(
    api_only: TestClient, frame: dict, column: str, rows: list[int]
) -> None:
    body = problem(api_only.post("/jobs", json={"pipeline": "billing_rollup", "frame": frame}), 422)
    error = body["errors"][0]
    assert error["column"] == column and error["rows"] == rows, body


def test_strict_mode_refuses_text_numbers(api_only: TestClient) -> None:
    frame = {"columns": {"userId": ["1"], "amount": [1.0]}}
    strict = api_only.post(
        "/jobs", json={"pipeline": "billing_rollup", "frame": frame, "validation": "strict"}
    )
    assert problem(strict, 422)["errors"][0]["column"] == "userId"
    coerce = api_only.post(
        "/jobs", json={"pipeline": "billing_rollup", "frame": frame, "validation": "coerce"}
    )
    assert coerce.status_code == 202, coerce.text


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        ({"columns": {"userId": [1]}}, "missing column"),
        ({"columns": {"userId": [1], "amount": [1.0], "extra": [1]}}, "unexpected column"),
        ({"columns": {"userId": [1, 2], "amount": [1.0]}}, "different lengths"),
        ({"columns": [1, 2]}, "columns"),
        ({"rows": [1, 2]}, "not an object"),
        ({}, "either"),
    ],
)
def test_frame_shape_errors(api_only: TestClient, frame: dict, needle: str) -> None:
    body = problem(api_only.post("/jobs", json={"pipeline": "billing_rollup", "frame": frame}), 422)
    assert needle in json.dumps(body), body


@pytest.mark.parametrize(
    ("content", "content_type", "status", "needle"),
    [
        (b"", "application/json", 422, "empty"),
        (b"{not json", "application/json", 422, "not valid JSON"),
        (b"[1, 2]", "application/json", 422, "object"),
        (b'{"frame": {"rows": []}}', "application/json", 422, "pipeline"),
        (b'{"pipeline": "nope", "frame": {"rows": []}}', "application/json", 404, "nope"),
        (b"hello", "text/plain", 415, "application/json"),
    ],
)
def test_malformed_bodies(
    api_only: TestClient, content: bytes, content_type: str, status: int, needle: str
) -> None:
    response = api_only.post("/jobs", content=content, headers={"content-type": content_type})
    assert needle in problem(response, status)["detail"]


@pytest.mark.parametrize(
    ("name", "data", "ctype", "needle"),
    [
        ("f.csv", b"userId,amount\n1,2,3\n", "text/csv", "CSV"),
        ("f.parquet", b"PAR1 this is not parquet", "application/vnd.apache.parquet", "Parquet"),
        ("f.arrow", b"not arrow at all", "application/vnd.apache.arrow.stream", "Arrow"),
        ("f.ndjson", b'{"userId": 1, "amount": 1}\n{oops\n', "application/x-ndjson", "line 2"),
        ("f.bin", b"???", "application/octet-stream", "format"),
    ],
)
def test_unreadable_files(
    api_only: TestClient, name: str, data: bytes, ctype: str, needle: str
) -> None:
    spec = json.dumps({"pipeline": "billing_rollup"})
    response = api_only.post("/jobs", data={"spec": spec}, files={"frame": (name, data, ctype)})
    assert response.status_code in (415, 422), response.text
    assert needle in problem(response, response.status_code)["detail"]


def test_oversize_bodies(settings, tmp_path) -> None:
    from service.api.app import create_app

    small = settings.model_copy(update={"max_json_bytes": 1000, "max_upload_bytes": 2000})
    with TestClient(create_app(small, workers=0)) as c:
        big = {
            "pipeline": "billing_rollup",
            "frame": {"columns": {"userId": list(range(500)), "amount": [1.0] * 500}},
        }
        problem(c.post("/jobs", json=big), 413)
        spec = json.dumps({"pipeline": "billing_rollup"})
        csv = b"userId,amount\n" + b"1,1.0\n" * 1000
        problem(
            c.post("/jobs", data={"spec": spec}, files={"frame": ("f.csv", csv, "text/csv")}), 413
        )


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("select 1; select 2", "exactly one statement"),
        ("select * from read_csv('/etc/passwd')", "Permission"),
        ("copy (select 1) to '/tmp/x.csv'", "SELECT"),
        ("attach '/tmp/x.db' as x", "SELECT"),
        ("install httpfs", "SELECT"),
        ("set threads = 1", "SELECT"),
        ("select nope from input", "nope"),
        ("selec 1", "parse"),
        ("pivot input on a", "runs as several statements"),
    ],
)
def test_sql_pipeline_refuses_unsafe_queries(api_only: TestClient, query: str, needle: str) -> None:
    body = {"pipeline": "sql", "params": {"query": query}, "frame": {"columns": {"a": [1]}}}
    assert needle in problem(api_only.post("/jobs", json=body), 422)["detail"]


def test_params_are_validated(api_only: TestClient) -> None:
    body = {"pipeline": "sql", "params": {}, "frame": {"columns": {"a": [1]}}}
    assert problem(api_only.post("/jobs", json=body), 422)["errors"][0]["field"] == "query"
    body = {"pipeline": "billing_rollup", "params": {"x": 1}, "frame": BILLING}
    problem(api_only.post("/jobs", json=body), 422)
    body = {"pipeline": "billing_rollup", "frame": BILLING, "max_attempts": 0}
    problem(api_only.post("/jobs", json=body), 422)
    body = {"pipeline": "sql", "params": {"query": "select 1", "querry": "x"}, "frame": BILLING}
    assert problem(api_only.post("/jobs", json=body), 422)["errors"][0]["field"] == "querry"


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("max_attempts", "true"),
        ("max_attempts", '"3"'),
        ("max_attempts", "3.0"),
        ("priority", "false"),
        ("timeout_s", "true"),
        ("timeout_s", "NaN"),
        ("timeout_s", "Infinity"),
        ("run_after", "1700000000"),
    ],
)
def test_spec_fields_take_their_documented_types_only(
    api_only: TestClient, field: str, raw: str
) -> None:
    """Lax parsing read `true` as 1 attempt, "3" as 3 and a number as Unix seconds."""
    frame = json.dumps(BILLING)
    body = f'{{"pipeline": "billing_rollup", "frame": {frame}, "{field}": {raw}}}'
    response = api_only.post("/jobs", content=body, headers={"Content-Type": "application/json"})
    assert problem(response, 422)["errors"][0]["field"] == field


def test_a_long_poll_wait_must_be_a_finite_number(api_only: TestClient) -> None:
    job = submit(api_only, "billing_rollup", BILLING)
    for wait in ("nan", "inf"):
        refused = problem(api_only.get(f"/jobs/{job['id']}?wait={wait}"), 422)
        assert "finite" in refused["detail"]


def test_the_pipeline_gets_the_params_submit_validated(client: TestClient) -> None:
    """Aliases and validators that change values apply once, as at submit."""
    job = submit(client, "echo_params", {"columns": {"a": [1]}}, params={"maxRows": 7, "n": 3})
    assert job["params"] == {"maxRows": 7, "n": 3}  # as sent
    assert wait_status(client, job["id"])["status"] == "completed"
    assert client.get(f"/jobs/{job['id']}/result").json()["rows"] == [{"max_rows": 7, "n": 6}]


def test_check_params_runs_for_params_that_dump_alike_or_not_at_all(
    api_only: TestClient,
) -> None:
    """Every secret dumps as '**********', so a check cached by the dumped params let
    a wrong token through after a right one; a field with no JSON form made a 500."""
    frame = {"columns": {"a": [1]}}
    good = {"pipeline": "guarded", "params": {"token": "open sesame"}, "frame": frame}
    assert api_only.post("/jobs", json=good).status_code == 202
    bad = {"pipeline": "guarded", "params": {"token": "guess"}, "frame": frame}
    assert problem(api_only.post("/jobs", json=bad), 422)["detail"] == "wrong token"


def test_a_check_that_fails_with_a_long_message_is_refused_in_one_line(
    api_only: TestClient,
) -> None:
    """A problem's detail is one line: a library's error can carry a traceback-like
    text, with paths of the server in it, after its first line."""
    frame = {"columns": {"a": [1]}}
    body = {"pipeline": "guarded", "params": {"token": "traceback"}, "frame": frame}
    detail = problem(api_only.post("/jobs", json=body), 422)["detail"]
    assert detail == "pipeline 'guarded' refused the params: ValueError: token store unreachable"


def test_a_params_validator_that_raises_another_error_is_a_422(api_only: TestClient) -> None:
    """Pydantic passes anything but ValueError and AssertionError through: a validator's
    KeyError made every submit with that value a 500."""
    body = {"pipeline": "regional", "params": {"region": "mars"}, "frame": {"columns": {"a": [1]}}}
    detail = problem(api_only.post("/jobs", json=body), 422)["detail"]
    assert detail == "pipeline 'regional' refused the params: KeyError: 'mars'"
    body["params"] = {"region": "eu"}
    assert api_only.post("/jobs", json=body).status_code == 202


def test_trailing_slashes_are_not_redirected(api_only: TestClient) -> None:
    """Starlette would redirect to a URL built from the client's Host header."""
    response = api_only.get("/jobs/", headers={"Host": "evil.example"}, follow_redirects=False)
    problem(response, 404)


def test_idempotency_key(api_only: TestClient) -> None:
    body = {"pipeline": "billing_rollup", "frame": BILLING}
    first = api_only.post("/jobs", json=body, headers={"Idempotency-Key": "k1"})
    again = api_only.post("/jobs", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    other = dict(body, priority=5)
    problem(api_only.post("/jobs", json=other, headers={"Idempotency-Key": "k1"}), 422)
    assert len(api_only.get("/jobs").json()["items"]) == 1


@pytest.mark.parametrize(
    "frame", [{"rows": [], "columns": {}}, {"rows": []}, {"columns": {}}, {}, [1], "x"]
)
def test_a_frame_wrong_as_a_whole_names_the_field(api_only: TestClient, frame: object) -> None:
    """Every 422 names its field, so a client can show the error next to it."""
    body = {"pipeline": "sql", "params": {"query": "select 1"}, "frame": frame}
    refused = problem(api_only.post("/jobs", json=body), 422)
    assert refused["errors"][0]["field"] == "frame", refused


@pytest.mark.parametrize("key", ["", "   "])
def test_an_empty_idempotency_key_is_refused(api_only: TestClient, key: str) -> None:
    """An empty key was stored as a key: every later empty-key submit was a 500."""
    body = {"pipeline": "billing_rollup", "frame": BILLING}
    for _ in range(2):
        refused = problem(api_only.post("/jobs", json=body, headers={"Idempotency-Key": key}), 422)
        assert refused["errors"][0]["field"] == "header.idempotency-key"
    assert api_only.get("/jobs").json()["items"] == []


def test_multipart_idempotency_covers_the_file(api_only: TestClient) -> None:
    spec = json.dumps({"pipeline": "billing_rollup"})
    headers = {"Idempotency-Key": "k2"}

    def post(csv: bytes):
        return api_only.post(
            "/jobs",
            data={"spec": spec},
            files={"frame": ("f.csv", csv, "text/csv")},
            headers=headers,
        )

    first = post(b"userId,amount\n1,1\n")
    assert post(b"userId,amount\n1,1\n").json()["id"] == first.json()["id"]
    problem(post(b"userId,amount\n1,2\n"), 422)


READINGS_OK = {"sensorId": ["s-1", "s-22"], "value": [0.0, 100.0], "unit": ["C", "F"]}


@pytest.mark.parametrize(
    ("change", "column", "reason", "rows"),
    [
        ({"value": [-0.5, 100.5]}, "value", "must be >= 0", [0]),
        ({"value": [50.0, "NaN"]}, "value", "finite", [1]),
        ({"sensorId": ["s-1", "x-2"]}, "sensorId", "pattern", [1]),
        ({"sensorId": ["s-123456789", "s-2"]}, "sensorId", "at most 8 characters", [0]),
        ({"unit": ["K", "C"]}, "unit", "must be one of 'C', 'F'", [0]),
        ({"tags": [["a", "b", "c", "d"], None]}, "tags", "at most 3 items", [0]),
    ],
)
def test_field_constraints_refuse_rows(
    api_only: TestClient, change: dict, column: str, reason: str, rows: list[int]
) -> None:
    frame = {"columns": {**READINGS_OK, **change}}
    body = problem(api_only.post("/jobs", json={"pipeline": "readings", "frame": frame}), 422)
    error = body["errors"][0]
    assert error["column"] == column and reason in error["reason"], body
    assert error["rows"] == rows, body
    assert column in body["detail"] and reason in body["detail"]


def test_field_constraints_hold_for_files_and_valid_frames_run(client: TestClient) -> None:
    spec = json.dumps({"pipeline": "readings"})
    csv = b"sensorId,value\ns-1,12.5\ns-2,101\ns-3,-1\n"
    response = client.post(
        "/jobs", data={"spec": spec}, files={"frame": ("f.csv", csv, "text/csv")}
    )
    assert problem(response, 422)["errors"] == [
        {"column": "value", "reason": "must be >= 0", "rows": [2]},
        {"column": "value", "reason": "must be <= 100", "rows": [1]},
    ]
    sink = io.BytesIO()
    pq.write_table(pa.table({"sensorId": ["s-1", "nope"], "value": [1.0, 2.0]}), sink)
    files = {"frame": ("f.parquet", sink.getvalue(), "application/vnd.apache.parquet")}
    error = problem(client.post("/jobs", data={"spec": spec}, files=files), 422)["errors"][0]
    assert error["column"] == "sensorId" and error["rows"] == [1]
    body = submit(client, "readings", {"columns": READINGS_OK})
    done = wait_status(client, body["id"])
    assert done["status"] == "completed", done
    rows = client.get(f"/jobs/{body['id']}/result").json()["rows"]
    assert [r["value"] for r in rows] == [0.0, 100.0]


def test_pipelines_show_the_constraints_they_check(api_only: TestClient) -> None:
    (described,) = [p for p in api_only.get("/pipelines").json() if p["name"] == "readings"]
    fields = described["input_schema"]["properties"]
    assert fields["sensorId"]["pattern"] == r"^s-\d+$"
    assert fields["value"]["minimum"] == 0 and fields["value"]["maximum"] == 100
    assert fields["unit"]["enum"] == ["C", "F"]


def test_job_ids_follow_commit_order_not_arrival(settings) -> None:
    """A large frame that takes a while to convert must not get an id older than the
    jobs committed meanwhile: lists are newest first and paged by id."""
    app = create_app(settings, workers=0)
    gate, converting = threading.Event(), threading.Event()

    class SlowFile(io.BytesIO):
        def read(self, *args: int) -> bytes:
            converting.set()
            assert gate.wait(10)
            return super().read(*args)

    with TestClient(app) as api:
        services = app.state.services
        slow: dict[str, str] = {}

        def slow_submit() -> None:
            frame = FrameFile(SlowFile(b"userId,amount\n1,2.5\n"), "csv")
            row, _ = submit_job(services, JobSpec(pipeline="billing_rollup"), frame_file=frame)
            slow["id"] = row["id"]

        thread = threading.Thread(target=slow_submit)
        thread.start()
        assert converting.wait(10)
        quick = submit(api, "billing_rollup", BILLING)
        gate.set()
        thread.join(10)
        assert slow["id"] > quick["id"]
        newest = [j["id"] for j in api.get("/jobs?page_size=2").json()["items"]]
        assert newest == [slow["id"], quick["id"]]


@pytest.mark.parametrize(
    "columns",
    [
        {"id": [1, 2]},  # no "to" at all: every row gets null
        {"id": [1, 2], "to": [None, None]},
        {"id": [1, 2], "to": [{"city": "Oslo", "zip": None}, None], "stops": [None, []]},
    ],
)
def test_optional_nested_models_may_be_null(client: TestClient, columns: dict) -> None:
    body = submit(client, "shipments", {"columns": columns})
    done = wait_status(client, body["id"])
    assert done["status"] == "completed", done
    rows = client.get(f"/jobs/{body['id']}/result").json()["rows"]
    assert [r["to"] for r in rows] == columns.get("to", [None, None])


def test_nulls_inside_nested_columns_are_refused_by_path(api_only: TestClient) -> None:
    frame = {
        "columns": {
            "id": [1, 2, 3],
            "to": [{"zip": "0150"}, {"city": None}, None],
            "stops": [[{"city": "a"}, None], [{"city": None}], None],
            "codes": [[1, None], None, [3]],
        }
    }
    body = problem(api_only.post("/jobs", json={"pipeline": "shipments", "frame": frame}), 422)
    reason = "null in a field that does not allow nulls"
    assert body["errors"] == [
        {"column": "to.city", "reason": reason, "rows": [0, 1]},
        {"column": "stops[]", "reason": reason, "rows": [0]},
        {"column": "stops[].city", "reason": reason, "rows": [1]},
        {"column": "codes[]", "reason": reason, "rows": [0]},
    ]


def test_a_job_is_stamped_created_when_its_input_is_stored(
    api_only: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storing a large input takes a while; the job is queued only once it is stored,
    so ``created_at`` (and a ``run_after`` left to its default) come after it."""
    import service.submit
    from service.store import utcnow

    stored_at = []
    write = service.submit.write_payload

    def timed_write(*args, **kwargs):
        written = write(*args, **kwargs)
        stored_at.append(utcnow())
        return written

    monkeypatch.setattr(service.submit, "write_payload", timed_write)
    body = submit(api_only, "billing_rollup", BILLING)
    created = datetime.fromisoformat(body["created_at"])
    assert stored_at and created >= stored_at[0]
    assert body["run_after"] == body["created_at"]
