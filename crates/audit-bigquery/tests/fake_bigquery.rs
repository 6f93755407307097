//! The fake's wire behaviour, checked with raw HTTP (so the sink's own choices cannot hide it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use testkit::bigquery::FakeBigQuery;

const P: &str = "proj";
const D: &str = "ds";

async fn fake() -> (FakeBigQuery, reqwest::Client, String) {
    let bq = FakeBigQuery::start_with_token("tok").await;
    bq.create_table(
        P,
        D,
        "t",
        json!([
            {"name": "id", "type": "STRING", "mode": "REQUIRED"},
            {"name": "n", "type": "INTEGER"},
            {"name": "ts", "type": "TIMESTAMP"},
        ]),
    );
    let url = format!(
        "{}/bigquery/v2/projects/{P}/datasets/{D}/tables/t/insertAll",
        bq.base_url()
    );
    (bq, reqwest::Client::new(), url)
}

async fn post(c: &reqwest::Client, url: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut rb = c.post(url).json(&body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn accepts_null_optional_fields_as_rust_clients_send_them() {
    let (bq, c, url) = fake().await;
    // gcloud-bigquery's InsertAllRequest/Row with every Option left None.
    let body = json!({
        "skipInvalidRows": null, "ignoreUnknownValues": null, "templateSuffix": null, "traceId": null,
        "rows": [{"insertId": null, "json": {"id": "a", "n": null, "ts": "2026-11-02T09:30:00.123456Z"}}],
    });
    let (status, resp) = post(&c, &url, Some("tok"), body).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["kind"], "bigquery#tableDataInsertAllResponse");
    assert!(
        resp.get("insertErrors").is_none(),
        "omitted on full success: {resp}"
    );
    assert_eq!(
        bq.rows(P, D, "t"),
        vec![
            json!({"id": "a", "ts": "2026-11-02T09:30:00.123456Z"})
                .as_object()
                .unwrap()
                .clone()
        ]
    );
}

#[tokio::test]
async fn without_skip_invalid_rows_one_bad_row_stops_the_request() {
    let (bq, c, url) = fake().await;
    let body = json!({"rows": [
        {"insertId": "1", "json": {"id": "a", "n": 1}},
        {"insertId": "2", "json": {"id": "b", "n": "abc"}},
        {"insertId": "3", "json": {"id": "c", "extra": 1}},
        {"insertId": "4", "json": {"n": 4}},
    ]});
    let (status, resp) = post(&c, &url, Some("tok"), body.clone()).await;
    assert_eq!(status, 200, "row errors are still HTTP 200");
    let errs = resp["insertErrors"].as_array().unwrap();
    let by_index = |i: u64| errs.iter().find(|e| e["index"] == i).unwrap()["errors"][0].clone();
    assert_eq!(by_index(0)["reason"], "stopped");
    assert_eq!(by_index(1)["reason"], "invalid");
    assert_eq!(by_index(1)["location"], "n");
    assert_eq!(by_index(2)["message"], "no such field: extra.");
    assert_eq!(by_index(3)["message"], "Missing required field: id.");
    assert_eq!(bq.row_count(P, D, "t"), 0);

    // skipInvalidRows: the good row lands, the bad ones are reported.
    let mut skip = body.clone();
    skip["skipInvalidRows"] = json!(true);
    let (_, resp) = post(&c, &url, Some("tok"), skip).await;
    assert_eq!(resp["insertErrors"].as_array().unwrap().len(), 3);
    assert_eq!(bq.row_count(P, D, "t"), 1);

    // ignoreUnknownValues: the unknown field is dropped instead.
    let mut ignore = body;
    ignore["skipInvalidRows"] = json!(true);
    ignore["ignoreUnknownValues"] = json!(true);
    let (_, resp) = post(&c, &url, Some("tok"), ignore).await;
    assert_eq!(resp["insertErrors"].as_array().unwrap().len(), 2);
    let rows = bq.stored_rows(P, D, "t");
    assert_eq!(
        rows.len(),
        2,
        "row 1 deduplicated by insertId, row 3 stored without `extra`"
    );
    assert_eq!(rows[1].insert_id.as_deref(), Some("3"));
    assert!(!rows[1].json.contains_key("extra"));
    assert_eq!(bq.calls().deduplicated_rows, 1);
}

#[tokio::test]
async fn errors_use_googles_envelope() {
    let (bq, c, url) = fake().await;
    let row = json!({"rows": [{"json": {"id": "a"}}]});

    let (status, resp) = post(&c, &url, None, row.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(resp["error"]["status"], "UNAUTHENTICATED");
    let (status, _) = post(&c, &url, Some("other"), row.clone()).await;
    assert_eq!(status, 401);

    let missing = url.replace("/tables/t/", "/tables/nope/");
    let (status, resp) = post(&c, &missing, Some("tok"), row.clone()).await;
    assert_eq!(status, 404);
    assert_eq!(resp["error"]["code"], 404);
    assert_eq!(resp["error"]["errors"][0]["reason"], "notFound");
    assert_eq!(resp["error"]["message"], "Not found: Table proj:ds.nope");

    let (status, resp) = post(&c, &url, Some("tok"), json!({"rows": []})).await;
    assert_eq!(status, 400);
    assert_eq!(resp["error"]["message"], "No rows present in the request.");

    bq.set_outage(true);
    let (status, resp) = post(&c, &url, Some("tok"), row.clone()).await;
    assert_eq!(status, 503);
    assert_eq!(resp["error"]["errors"][0]["reason"], "backendError");
    bq.set_outage(false);

    let tables = format!(
        "{}/bigquery/v2/projects/{P}/datasets/{D}/tables",
        bq.base_url()
    );
    let (status, resp) = post(
        &c,
        &tables,
        Some("tok"),
        json!({"tableReference": {"projectId": P, "datasetId": D, "tableId": "t"}}),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(resp["error"]["errors"][0]["reason"], "duplicate");
    assert_eq!(resp["error"]["status"], "ALREADY_EXISTS");

    let r = c
        .get(format!("{tables}/t"))
        .bearer_auth("tok")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["id"], "proj:ds.t");
    assert_eq!(t["schema"]["fields"][0]["name"], "id");

    let calls = bq.calls();
    assert_eq!(calls.unauthenticated, 2);
    assert_eq!(calls.outage_refused, 1);
    assert_eq!(calls.tables_insert, 1);
    assert_eq!(calls.tables_get, 1);
}
