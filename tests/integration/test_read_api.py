"""Reading jobs: ETag, long-poll, events, results, listing, deletion, service routes."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from fastapi.testclient import TestClient

from service.api.app import create_app
from tests.conftest import fast_settings
from tests.support.jobs import submit, wait_status
from tests.support.pipelines import ODD_UUID

FRAME = {"columns": {"userId": [1, 2, 1, 3], "amount": [1.0, 2.0, 3.0, 4.0]}}


def test_etag_and_304(client: TestClient) -> None:
    job = submit(client, "billing_rollup", FRAME)
    done = wait_status(client, job["id"])
    response = client.get(f"/jobs/{job['id']}")
    tag = response.headers["etag"]
    assert "retry-after" not in response.headers  # terminal
    again = client.get(f"/jobs/{job['id']}", headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b""
    assert done["status"] == "completed"


def test_if_none_match_takes_lists_weak_tags_and_a_star(api_only: TestClient) -> None:
    """RFC 9110 13.1.2: a compressing proxy sends W/"7"; a cache sends every tag it
    holds. A miss answered 200 made the documented long-poll loop spin."""
    job = submit(api_only, "billing_rollup", FRAME)
    tag = api_only.get(f"/jobs/{job['id']}").headers["etag"]
    for sent in (f"W/{tag}", f'"999", {tag}', f'W/"999" , W/{tag}', "*"):
        again = api_only.get(f"/jobs/{job['id']}", headers={"If-None-Match": sent})
        assert again.status_code == 304 and again.headers["etag"] == tag, sent
    for sent in ('"999"', 'W/"999", "998"', tag.strip('"')):
        assert (
            api_only.get(f"/jobs/{job['id']}", headers={"If-None-Match": sent}).status_code == 200
        )
    waited = api_only.get(f"/jobs/{job['id']}?wait=0.3", headers={"If-None-Match": f"W/{tag}"})
    assert waited.status_code == 304


def test_retry_after_while_not_terminal(api_only: TestClient) -> None:
    job = submit(api_only, "billing_rollup", FRAME)
    assert api_only.get(f"/jobs/{job['id']}").headers["retry-after"] == "1"


def test_long_poll_returns_when_the_job_changes(api_only: TestClient) -> None:
    job = submit(api_only, "billing_rollup", FRAME)
    tag = api_only.get(f"/jobs/{job['id']}").headers["etag"]
    timer = threading.Timer(0.3, lambda: api_only.post(f"/jobs/{job['id']}/cancel"))
    started = time.monotonic()
    timer.start()
    response = api_only.get(f"/jobs/{job['id']}?wait=10", headers={"If-None-Match": tag})
    elapsed = time.monotonic() - started
    timer.join()
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert elapsed < 5


def test_long_poll_times_out_with_304(api_only: TestClient) -> None:
    job = submit(api_only, "billing_rollup", FRAME)
    tag = api_only.get(f"/jobs/{job['id']}").headers["etag"]
    response = api_only.get(f"/jobs/{job['id']}?wait=0.3", headers={"If-None-Match": tag})
    assert response.status_code == 304


def _events(
    client: TestClient, job_id: str, last: str | None = None, on_progress=None
) -> list[dict]:
    headers = {"Last-Event-ID": last} if last else {}
    events, current = [], {}
    with client.stream("GET", f"/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("id: "):
                current["id"] = line[4:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif not line and current:
                events.append(current)
                if current.get("event") == "progress" and on_progress:
                    on_progress()
                    on_progress = None
                current = {}
    return events


def test_event_stream_and_resume(client: TestClient) -> None:
    job = submit(client, "sleepy", params={"seconds": 60})
    # the stream shows progress; cancelling on the first one ends the stream
    events = _events(
        client, job["id"], on_progress=lambda: client.post(f"/jobs/{job['id']}/cancel")
    )
    statuses = [e["data"]["status"] for e in events if e["event"] == "status"]
    assert statuses == ["queued", "running", "cancelled"]
    assert any(e["event"] == "progress" for e in events)
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids)
    # resume after the first event: nothing before it again, nothing lost after it
    resumed = _events(client, job["id"], last=events[0]["id"])
    assert [e["data"]["status"] for e in resumed if e["event"] == "status"] == [
        "running",
        "cancelled",
    ]
    # an EventSource reconnects whenever a stream ends: once it has everything, 204
    # tells it to stop (an empty 200 had it reconnect forever)
    for seen in (events[-1]["id"], "999999"):
        done = client.get(f"/jobs/{job['id']}/events", headers={"Last-Event-ID": seen})
        assert done.status_code == 204 and done.content == b""


def test_events_for_unknown_job_is_404(client: TestClient) -> None:
    response = client.get("/jobs/nope/events")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_result_formats(client: TestClient) -> None:
    job = submit(client, "billing_rollup", FRAME)
    assert wait_status(client, job["id"])["status"] == "completed"
    url = f"/jobs/{job['id']}/result"
    expected = [(1, 4.0, 2), (2, 2.0, 1), (3, 4.0, 1)]

    as_json = client.get(url).json()
    assert [(r["user_id"], r["total"], r["n"]) for r in as_json["rows"]] == expected
    ndjson = client.get(url, headers={"Accept": "application/x-ndjson"})
    assert ndjson.headers["content-type"].startswith("application/x-ndjson")
    assert [tuple(json.loads(line).values()) for line in ndjson.text.splitlines()] == expected
    csv = client.get(url + "?format=csv")
    assert csv.text.splitlines()[0] == '"user_id","total","n"' and len(csv.text.splitlines()) == 4
    parquet = client.get(url, headers={"Accept": "application/vnd.apache.parquet"})
    assert int(parquet.headers["content-length"]) == len(parquet.content)
    table = pq.read_table(io.BytesIO(parquet.content))
    assert list(zip(*table.to_pydict().values(), strict=True)) == expected
    arrow = client.get(url, headers={"Accept": "application/vnd.apache.arrow.stream"})
    assert pa.ipc.open_stream(arrow.content).read_all().equals(table)
    refused = client.get(url, headers={"Accept": "image/png"})
    assert refused.status_code == 406


def _sql_result(client: TestClient, query: str) -> dict:
    job = submit(client, "sql", {"columns": {"a": [1]}}, params={"query": query})
    return wait_status(client, job["id"])


def test_results_vary_by_accept(client: TestClient) -> None:
    done = _sql_result(client, "select 1 as x")
    for fmt in ("json", "ndjson", "csv", "parquet", "arrow"):
        response = client.get(f"/jobs/{done['id']}/result?format={fmt}")
        assert response.headers["vary"] == "Accept", fmt
    assert client.get(f"/jobs/{done['id']}/result?format=").status_code == 406


def test_wide_integers_are_exact_or_the_job_fails(client: TestClient) -> None:
    done = _sql_result(
        client,
        "select 70141183460469231731687303715884105727::hugeint as h, "
        "99999999999999999999999999999999999999::uhugeint as u, "
        "123456789012345678901234567890123456789012345::bignum as big, "
        "'12:00:01+02'::timetz as tz",
    )
    assert done["status"] == "completed", done
    (row,) = client.get(f"/jobs/{done['id']}/result").json()["rows"]
    assert row == {
        "h": "70141183460469231731687303715884105727",
        "u": "99999999999999999999999999999999999999",
        "big": "123456789012345678901234567890123456789012345",
        "tz": "12:00:01+02",
    }
    for query in (
        "select 340282366920938463463374607431768211455::uhugeint as u",
        "select (-170141183460469231731687303715884105727)::hugeint - 1 as h",
    ):
        failed = _sql_result(client, query)
        assert failed["status"] == "failed" and "DECIMAL(38,0)" in failed["error"]["message"]
    nested = _sql_result(client, "select [1::hugeint] as l")
    assert nested["status"] == "failed" and "cast it" in nested["error"]["message"]


def test_bit_strings_are_their_text_or_the_job_fails(client: TestClient) -> None:
    """DuckDB exports BIT as its own bytes: '101' arrived as b'\\x05\\xfd' (a padding
    count, then the bits padded with ones), which no client can read."""
    done = _sql_result(client, "select '101'::BIT as b")
    assert done["status"] == "completed", done
    assert client.get(f"/jobs/{done['id']}/result").json()["rows"] == [{"b": "101"}]
    nested = _sql_result(client, "select ['1'::BIT] as l")
    assert nested["status"] == "failed" and "cast it" in nested["error"]["message"]


def test_repeated_result_column_names_fail_the_job(client: TestClient) -> None:
    done = _sql_result(client, "select 1 as a, 2 as a")
    assert done["status"] == "failed"
    assert "repeats column names ['a']" in done["error"]["message"]


def test_a_result_without_columns_fails_the_job(client: TestClient) -> None:
    done = wait_status(client, submit(client, "no_columns")["id"])
    assert done["status"] == "failed" and "no columns" in done["error"]["message"], done


def test_arrow_extension_and_view_types_are_stored_as_plain_types(client: TestClient) -> None:
    job = submit(client, "odd_types")
    done = wait_status(client, job["id"])
    assert done["status"] == "completed", done
    assert client.get(f"/jobs/{job['id']}/result").json()["rows"] == [
        {"id": ODD_UUID, "text": "a", "doc": '{"k": 1}', "views": [1]},
        {"id": None, "text": None, "doc": None, "views": [2, 3]},
    ]
    csv = client.get(f"/jobs/{job['id']}/result?format=csv")
    assert csv.status_code == 200 and ODD_UUID in csv.text and len(csv.text.splitlines()) == 3


def test_enums_and_end_of_day_times_as_text(client: TestClient) -> None:
    done = _sql_result(client, "select 'b'::enum('a', 'b') as e, '24:00:00'::time as t")
    assert done["status"] == "completed", done
    url = f"/jobs/{done['id']}/result"
    assert client.get(url + "?format=csv").text.splitlines() == ['"e","t"', '"b","24:00:00.000000"']
    assert client.get(url).json()["rows"] == [{"e": "b", "t": "24:00:00.000000"}]


def test_result_columns_describe_the_stored_types(client: TestClient) -> None:
    done = _sql_result(client, "select '2020-01-01 00:00:01'::timestamp_s as ts, [1, 2] as l")
    page = client.get(f"/jobs/{done['id']}/result").json()
    served = [(c["name"], c["type"]) for c in page["columns"]]
    assert [(c["name"], c["type"]) for c in done["result"]["columns"]] == served
    assert served[0] == ("ts", "timestamp[ms]")


def test_result_paging(client: TestClient) -> None:
    job = submit(
        client,
        "sql",
        {"columns": {"a": list(range(25))}},
        params={"query": "select a from input order by a"},
    )
    assert wait_status(client, job["id"])["status"] == "completed"
    url = f"/jobs/{job['id']}/result"
    page = client.get(url + "?offset=10&limit=10").json()
    assert [r["a"] for r in page["rows"]] == list(range(10, 20))
    assert page["total"] == 25 and page["next_offset"] == 20
    last = client.get(url + "?offset=20&limit=10").json()
    assert [r["a"] for r in last["rows"]] == list(range(20, 25)) and last["next_offset"] is None


def test_result_before_completion_is_409(api_only: TestClient) -> None:
    job = submit(api_only, "billing_rollup", FRAME)
    response = api_only.get(f"/jobs/{job['id']}/result")
    assert response.status_code == 409 and "queued" in response.json()["detail"]


def test_list_filters_and_keyset_paging(api_only: TestClient) -> None:
    ids = [submit(api_only, "billing_rollup", FRAME)["id"] for _ in range(5)]
    ids += [submit(api_only, "sql", params={"query": "select 1"})["id"] for _ in range(2)]
    api_only.post(f"/jobs/{ids[0]}/cancel")
    seen, token = [], None
    while True:
        url = "/jobs?page_size=3" + (f"&page_token={token}" if token else "")
        page = api_only.get(url).json()
        seen += [j["id"] for j in page["items"]]
        token = page.get("next_page_token")
        if not token:
            break
    assert seen == sorted(ids, reverse=True)
    sql_only = api_only.get("/jobs?pipeline=sql").json()["items"]
    assert {j["id"] for j in sql_only} == set(ids[5:])
    cancelled = api_only.get("/jobs?status=cancelled").json()["items"]
    assert [j["id"] for j in cancelled] == [ids[0]]
    # repeated filters are alternatives (only the last one counted before)
    either = api_only.get("/jobs?status=cancelled&status=queued&page_size=500").json()["items"]
    assert {j["id"] for j in either} == set(ids)
    both = api_only.get("/jobs?pipeline=sql&pipeline=billing_rollup&status=cancelled").json()
    assert [j["id"] for j in both["items"]] == [ids[0]]
    assert len(api_only.get("/jobs?pipeline=&page_size=500").json()["items"]) == len(ids)
    bogus = api_only.get("/jobs?status=queued&status=bogus")
    assert bogus.status_code == 422 and bogus.json()["errors"][0]["field"] == "query.status.1"
    assert api_only.get("/jobs?page_token=%%%").status_code == 422


def test_delete_terminal_jobs_only(client: TestClient) -> None:
    job = submit(client, "sleepy", params={"seconds": 30})
    wait_status(client, job["id"], "running")
    assert client.delete(f"/jobs/{job['id']}").status_code == 409
    client.post(f"/jobs/{job['id']}/cancel")
    wait_status(client, job["id"])
    assert client.delete(f"/jobs/{job['id']}").status_code == 204
    assert client.get(f"/jobs/{job['id']}").status_code == 404
    assert client.get(f"/jobs/{job['id']}/result").status_code == 404


def test_service_routes(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    pipelines = {p["name"]: p for p in client.get("/pipelines").json()}
    assert {"sql", "billing_rollup"} <= pipelines.keys()
    schema = pipelines["billing_rollup"]["input_schema"]
    assert set(schema["properties"]) == {"userId", "amount"}
    assert "query" in pipelines["sql"]["params_schema"]["properties"]
    metrics = client.get("/metrics").text
    assert 'framejobs_jobs{status="queued"}' in metrics
    assert "framejobs_watchers 0.0" in metrics
    assert client.get("/openapi.json").json()["paths"]["/jobs"]["post"]
    missing = client.get("/nowhere")
    assert (
        missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    )


def test_head_answers_as_get_without_a_body(api_only: TestClient) -> None:
    assert api_only.head("/healthz").status_code == 200
    job = submit(api_only, "billing_rollup", FRAME)
    get, head = api_only.get(f"/jobs/{job['id']}"), api_only.head(f"/jobs/{job['id']}")
    assert head.status_code == 200 and head.content == b""
    for name in ("etag", "content-length", "content-type", "retry-after"):
        assert head.headers[name] == get.headers[name]
    # an event stream of a queued job would run until the job ends: HEAD ends at once
    events = api_only.head(f"/jobs/{job['id']}/events")
    assert events.status_code == 200 and events.headers["content-type"].startswith(
        "text/event-stream"
    )
    assert api_only.head(f"/jobs/{job['id']}/result").status_code == 409


def test_405_names_every_method_of_the_path(client: TestClient) -> None:
    for method, path, allowed in [
        ("PUT", "/jobs/any", "DELETE, GET, HEAD"),
        ("PATCH", "/jobs", "GET, HEAD, POST"),
        ("GET", "/jobs/any/cancel", "POST"),
        ("POST", "/healthz", "GET, HEAD"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 405, (method, path)
        assert response.headers["allow"] == allowed, (method, path)
        assert response.headers["content-type"] == "application/problem+json"


def test_result_downloads_need_no_disk(database_url: str, small_disk: Path) -> None:
    """Results are read from the database in place, a row group at a time: a full disk
    (which made every format but Parquet a 500, the result being copied to the spool
    first) changes nothing."""
    settings = fast_settings(database_url, small_disk / "data")
    with TestClient(create_app(settings)) as client:
        job = submit(client, "billing_rollup", FRAME)
        done = wait_status(client, job["id"])
        assert done["status"] == "completed"
        filler = small_disk / "filler"
        with filler.open("wb") as handle, contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 1024 * 1024)
        for fmt in ("csv", "json", "ndjson", "arrow", "parquet"):
            response = client.get(f"/jobs/{job['id']}/result?format={fmt}")
            assert response.status_code == 200, (fmt, response.text)
        assert client.get(f"/jobs/{job['id']}/result").json()["total"] == done["result"]["rows"]


def test_results_revalidate_with_their_etag(client: TestClient) -> None:
    """A completed result never changes: a client (or cache) that has it asks again
    with its ETag and gets 304, per format (the formats are different bodies)."""
    job = submit(client, "billing_rollup", FRAME)
    assert wait_status(client, job["id"])["status"] == "completed"
    url = f"/jobs/{job['id']}/result"
    tags = {}
    for fmt in ("json", "ndjson", "csv", "parquet", "arrow"):
        first = client.get(f"{url}?format={fmt}")
        tags[fmt] = first.headers["etag"]
        for sent in (tags[fmt], f"W/{tags[fmt]}", f'"other", {tags[fmt]}'):
            again = client.get(f"{url}?format={fmt}", headers={"If-None-Match": sent})
            assert again.status_code == 304 and again.content == b"", (fmt, sent)
            assert again.headers["etag"] == tags[fmt] and again.headers["vary"] == "Accept"
    assert len(set(tags.values())) == 5
    other = client.get(f"{url}?format=csv", headers={"If-None-Match": tags["json"]})
    assert other.status_code == 200
