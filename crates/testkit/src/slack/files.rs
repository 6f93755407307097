//! The external file upload flow of the fake Slack: `files.getUploadURLExternal` announces a
//! file and hands out an upload URL, the bytes are posted there (`server.rs`), and
//! `files.completeUploadExternal` shares the files that received their bytes.

use serde_json::{Value, json};

use super::state::{FakeFile, Inner, PendingUpload, resolve_channel};
use super::web_api::{Answer, Req, arg, envelope_err, missing, ok};

pub(super) fn get_upload_url_external(i: &mut Inner, req: &Req) -> Answer {
    let Some(filename) = arg(req.args, "filename") else {
        return missing("filename");
    };
    let Some(length) = arg(req.args, "length").and_then(|l| l.parse::<usize>().ok()) else {
        return missing("length");
    };
    if length == 0 {
        return envelope_err("missing_argument");
    }
    let id = format!("F{:08}", i.next_n());
    i.uploads.insert(
        id.clone(),
        PendingUpload {
            filename: filename.to_string(),
            length,
            content: None,
        },
    );
    ok(json!({"upload_url": format!("{}/upload/{id}", req.base), "file_id": id}))
}

pub(super) fn complete_upload_external(i: &mut Inner, req: &Req) -> Answer {
    let args = req.args;
    let files = match args.get("files") {
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).unwrap_or(Value::Null),
        Some(v) => v.clone(),
        None => return missing("files"),
    };
    let Some(list) = files.as_array().filter(|a| !a.is_empty()) else {
        return envelope_err("invalid_arguments");
    };
    let channel_id = arg(args, "channel_id").map(str::to_string);
    if let Some(c) = &channel_id
        && resolve_channel(i, c).as_deref() != Some(c.as_str())
    {
        return envelope_err("channel_not_found");
    }
    // Every file must have received its bytes, or none is shared.
    let mut done = vec![];
    for f in list {
        let id = f.get("id").and_then(Value::as_str).unwrap_or_default();
        match i.uploads.get(id) {
            Some(PendingUpload {
                content: Some(_), ..
            }) => {}
            _ => return envelope_err("file_not_found"),
        }
        done.push((
            id.to_string(),
            f.get("title").and_then(Value::as_str).map(str::to_string),
        ));
    }
    let comment = arg(args, "initial_comment").map(str::to_string);
    let mut out = vec![];
    for (id, title) in done {
        if let Some(u) = i.uploads.remove(&id) {
            let title = title.unwrap_or_else(|| u.filename.clone());
            out.push(json!({"id": id, "title": title}));
            i.files.push(FakeFile {
                id,
                filename: u.filename,
                title,
                channel_id: channel_id.clone(),
                initial_comment: comment.clone(),
                content: u.content.unwrap_or_default(),
            });
        }
    }
    ok(json!({"files": out}))
}
