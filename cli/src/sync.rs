//! `vibe sync`: two-way sync of a local folder of JSON files with the instance's
//! documents, over the instance's CouchDB replication endpoint (`/api/v1/sync/`:
//! `_changes`, `_bulk_get`, `_bulk_docs`).
//!
//! Layout: `<folder>/<collection>/<id>.json` holds document `<collection>/<id>` (the
//! id is percent-encoded where a file name cannot hold it) without `_id`/`_rev`.
//! `<folder>/.vibe-sync.json` remembers the instance, the `_changes` checkpoint and, per
//! document, the revision and file hash of the last sync.
//!
//! Rules, per document:
//! - changed only on one side → copied to the other (creates, updates and deletions);
//! - changed on both sides → the local file is kept, the instance's version is written
//!   beside it as `<id>.conflict.json`, and the document is not pushed while that file
//!   exists. Resolve by editing `<id>.json` and deleting the conflict file; the next sync
//!   pushes the edit over the instance's revision.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use vibe_api::Collection;

use crate::client::Client;
use crate::error::{ClientError, Result};

const STATE_FILE: &str = ".vibe-sync.json";
const CONFLICT_SUFFIX: &str = ".conflict.json";
const BATCH: usize = 200;

/// What a sync did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    /// Documents written to the folder.
    pub pulled: Vec<String>,
    /// Files deleted because the document was deleted on the instance.
    pub deleted_locally: Vec<String>,
    /// Documents written to the instance.
    pub pushed: Vec<String>,
    /// Documents deleted on the instance because their file was deleted.
    pub deleted_remotely: Vec<String>,
    /// Documents changed on both sides (see the module docs).
    pub conflicts: Vec<String>,
    /// Per-document failures (`id: reason`).
    pub errors: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    instance: String,
    #[serde(default)]
    since: Value,
    #[serde(default)]
    docs: BTreeMap<String, Synced>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Synced {
    /// Revision on the instance at the last sync (`None`: must be created anew).
    rev: Option<String>,
    /// SHA-256 of the file at the last sync.
    hash: String,
}

/// Encode a document key as a file stem.
pub fn encode_key(key: &str) -> String {
    let mut out = String::new();
    for (i, byte) in key.bytes().enumerate() {
        let plain =
            byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' || (byte == b'.' && i > 0);
        if plain {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decode a file stem back into a document key.
pub fn decode_key(stem: &str) -> Option<String> {
    let bytes = stem.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = stem.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn split_id(id: &str) -> Option<(&str, &str)> {
    let (collection, key) = id.split_once('/')?;
    (Collection::is_valid(collection) && !key.is_empty()).then_some((collection, key))
}

/// A two-way sync of one folder with one instance.
pub struct FolderSync<'a> {
    client: &'a Client,
    root: PathBuf,
    collections: Vec<String>,
}

impl<'a> FolderSync<'a> {
    /// Sync `root` with `client`'s instance; `collections` limits it (empty = all).
    pub fn new(client: &'a Client, root: &Path, collections: &[String]) -> Result<Self> {
        for c in collections {
            if !Collection::is_valid(c) {
                return Err(ClientError::Usage(format!(
                    "{c:?} is not a collection name ([a-z0-9][a-z0-9_-]{{0,63}})"
                )));
            }
        }
        Ok(Self {
            client,
            root: root.to_path_buf(),
            collections: collections.to_vec(),
        })
    }

    fn wanted(&self, collection: &str) -> bool {
        self.collections.is_empty() || self.collections.iter().any(|c| c == collection)
    }

    fn file_of(&self, collection: &str, key: &str) -> PathBuf {
        self.root
            .join(collection)
            .join(format!("{}.json", encode_key(key)))
    }

    fn conflict_file_of(&self, collection: &str, key: &str) -> PathBuf {
        self.root
            .join(collection)
            .join(format!("{}{CONFLICT_SUFFIX}", encode_key(key)))
    }

    fn load_state(&self) -> Result<State> {
        let path = self.root.join(STATE_FILE);
        let instance = self.client.instance().url();
        let state: State = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Usage(format!("{} is corrupt: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
                instance: instance.clone(),
                ..State::default()
            },
            Err(e) => return Err(ClientError::io(&path, e)),
        };
        if state.instance != instance {
            return Err(ClientError::Usage(format!(
                "{} is synced with {}, not {instance}; use another folder",
                self.root.display(),
                state.instance
            )));
        }
        Ok(state)
    }

    fn save_state(&self, state: &State) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(state).expect("state serializes");
        crate::session::write_private(&self.root.join(STATE_FILE), &bytes)
    }

    async fn sync_call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let url = self
            .client
            .instance()
            .endpoint(&format!("api/v1/sync/{path}"));
        let what = format!(
            "{method} /api/v1/sync/{}",
            path.split('?').next().unwrap_or(path)
        );
        self.client
            .send_json(&what, |i| {
                let request = i.http().request(method.clone(), url.clone());
                match &body {
                    Some(body) => request.json(body),
                    None => request,
                }
            })
            .await
    }

    /// Run one sync: pull the instance's changes, then push the folder's.
    pub async fn run(&self) -> Result<Report> {
        std::fs::create_dir_all(&self.root).map_err(|e| ClientError::io(&self.root, e))?;
        let mut state = self.load_state()?;
        let mut report = Report::default();
        self.pull(&mut state, &mut report).await?;
        self.save_state(&state)?;
        self.push(&mut state, &mut report).await?;
        self.save_state(&state)?;
        Ok(report)
    }

    async fn pull(&self, state: &mut State, report: &mut Report) -> Result<()> {
        loop {
            let mut url = url::Url::parse("http://x/_changes").expect("static URL");
            url.query_pairs_mut()
                .append_pair("limit", &BATCH.to_string());
            if !state.since.is_null() {
                let since = match &state.since {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                url.query_pairs_mut().append_pair("since", &since);
            }
            let path = format!("_changes?{}", url.query().unwrap_or_default());
            let changes = self.sync_call(Method::GET, &path, None).await?;
            let results = changes["results"].as_array().cloned().unwrap_or_default();
            let mut fetch = Vec::new();
            for change in &results {
                let Some(id) = change["id"].as_str() else {
                    continue;
                };
                let Some((collection, _)) = split_id(id) else {
                    continue;
                };
                if !self.wanted(collection) {
                    continue;
                }
                let rev = change["changes"][0]["rev"].as_str().unwrap_or_default();
                let known = state.docs.get(id).and_then(|s| s.rev.as_deref());
                if known == Some(rev) {
                    continue;
                }
                if change["deleted"] == true {
                    self.apply_remote_delete(id, state, report)?;
                } else {
                    fetch.push(json!({ "id": id }));
                }
            }
            if !fetch.is_empty() {
                let got = self
                    .sync_call(Method::POST, "_bulk_get", Some(json!({ "docs": fetch })))
                    .await?;
                for result in got["results"].as_array().cloned().unwrap_or_default() {
                    let id = result["id"].as_str().unwrap_or_default().to_string();
                    match result["docs"][0].get("ok") {
                        Some(doc) => self.apply_remote_doc(&id, doc, state, report)?,
                        None => report
                            .errors
                            .push(format!("{id}: could not fetch ({})", result["docs"][0])),
                    }
                }
            }
            let last_seq = changes.get("last_seq").cloned();
            let advanced = last_seq.as_ref().is_some_and(|last| *last != state.since);
            if let Some(last) = last_seq {
                state.since = last;
            }
            // The instance leaves its own design documents out of a page, so a short
            // page is no sign of the end: CouchDB's `pending` is; without it, an empty
            // page.
            let done = match changes.get("pending").and_then(Value::as_u64) {
                Some(pending) => pending == 0,
                None => results.is_empty(),
            };
            if done || !advanced {
                return Ok(());
            }
        }
    }

    fn apply_remote_delete(&self, id: &str, state: &mut State, report: &mut Report) -> Result<()> {
        let (collection, key) = split_id(id).expect("checked by caller");
        let file = self.file_of(collection, key);
        let local = read_file(&file)?;
        let Some(synced) = state.docs.get(id).cloned() else {
            // Never synced here; nothing to delete.
            return Ok(());
        };
        match local {
            Some(bytes) if hash(&bytes) != synced.hash => {
                // Edited here, deleted there: keep the edit; it will be created anew.
                state.docs.insert(
                    id.to_string(),
                    Synced {
                        rev: None,
                        ..synced
                    },
                );
                report.conflicts.push(format!(
                    "{id}: deleted on the instance, edited locally (kept)"
                ));
            }
            Some(_) => {
                std::fs::remove_file(&file).map_err(|e| ClientError::io(&file, e))?;
                state.docs.remove(id);
                report.deleted_locally.push(id.to_string());
            }
            None => {
                state.docs.remove(id);
            }
        }
        Ok(())
    }

    fn apply_remote_doc(
        &self,
        id: &str,
        doc: &Value,
        state: &mut State,
        report: &mut Report,
    ) -> Result<()> {
        let Some((collection, key)) = split_id(id) else {
            return Ok(());
        };
        let rev = doc["_rev"].as_str().unwrap_or_default().to_string();
        let mut body: Map<String, Value> = doc.as_object().cloned().unwrap_or_default();
        body.remove("_id");
        body.remove("_rev");
        body.remove("_revisions");
        let mut bytes = serde_json::to_vec_pretty(&Value::Object(body)).expect("serializes");
        bytes.push(b'\n');
        let file = self.file_of(collection, key);
        let local = read_file(&file)?;
        let synced = state.docs.get(id).cloned();
        let locally_changed = match (&local, &synced) {
            (Some(now), Some(s)) => hash(now) != s.hash,
            (Some(now), None) => hash(now) != hash(&bytes),
            (None, _) => false,
        };
        if locally_changed {
            let conflict = self.conflict_file_of(collection, key);
            write_file(&conflict, &bytes)?;
            let old_hash = synced.map(|s| s.hash).unwrap_or_default();
            state.docs.insert(
                id.to_string(),
                Synced {
                    rev: Some(rev),
                    hash: old_hash,
                },
            );
            report.conflicts.push(format!(
                "{id}: changed on both sides; the instance's version is in {}",
                conflict.display()
            ));
            return Ok(());
        }
        write_file(&file, &bytes)?;
        state.docs.insert(
            id.to_string(),
            Synced {
                rev: Some(rev),
                hash: hash(&bytes),
            },
        );
        report.pulled.push(id.to_string());
        Ok(())
    }

    async fn push(&self, state: &mut State, report: &mut Report) -> Result<()> {
        let mut batch: Vec<(String, String, Value)> = Vec::new(); // (id, hash, doc)
        let mut present = std::collections::BTreeSet::new();
        for (collection, key, file) in self.local_files()? {
            let id = format!("{collection}/{key}");
            present.insert(id.clone());
            let conflict_file = self.conflict_file_of(&collection, &key);
            if conflict_file.exists() {
                let prefix = format!("{id}:");
                if !report.conflicts.iter().any(|c| c.starts_with(&prefix)) {
                    report.conflicts.push(format!(
                        "{id}: not pushed while {} exists; merge it into {} and delete it",
                        conflict_file.display(),
                        file.display()
                    ));
                }
                continue;
            }
            let bytes = read_file(&file)?.unwrap_or_default();
            let file_hash = hash(&bytes);
            let synced = state.docs.get(&id);
            if synced.is_some_and(|s| s.hash == file_hash && s.rev.is_some()) {
                continue;
            }
            let mut doc = match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(map)) => map,
                Ok(_) => {
                    report
                        .errors
                        .push(format!("{id}: {} is not a JSON object", file.display()));
                    continue;
                }
                Err(e) => {
                    report
                        .errors
                        .push(format!("{id}: {} is not JSON ({e})", file.display()));
                    continue;
                }
            };
            match doc.get("collection") {
                None => {
                    doc.insert("collection".into(), json!(collection));
                }
                Some(Value::String(c)) if *c == collection => {}
                Some(other) => {
                    report.errors.push(format!(
                        "{id}: its `collection` field is {other} but it lies in folder {collection}"
                    ));
                    continue;
                }
            }
            doc.insert("_id".into(), json!(id));
            if let Some(rev) = synced.and_then(|s| s.rev.clone()) {
                doc.insert("_rev".into(), json!(rev));
            }
            batch.push((id, file_hash, Value::Object(doc)));
        }
        for (id, synced) in &state.docs {
            let wanted = split_id(id).is_some_and(|(c, _)| self.wanted(c));
            if wanted
                && !present.contains(id)
                && let Some(rev) = &synced.rev
            {
                batch.push((
                    id.clone(),
                    String::new(),
                    json!({ "_id": id, "_rev": rev, "_deleted": true }),
                ));
            }
        }
        for chunk in batch.chunks(BATCH) {
            let docs: Vec<Value> = chunk.iter().map(|(_, _, doc)| doc.clone()).collect();
            let results = self
                .sync_call(Method::POST, "_bulk_docs", Some(json!({ "docs": docs })))
                .await?;
            let results = results.as_array().cloned().unwrap_or_default();
            for ((id, file_hash, doc), result) in chunk
                .iter()
                .zip(results.iter().chain(std::iter::repeat(&Value::Null)))
            {
                let deleted = doc["_deleted"] == true;
                match result["rev"].as_str() {
                    Some(rev) if result["error"].is_null() => {
                        if deleted {
                            state.docs.remove(id);
                            report.deleted_remotely.push(id.clone());
                        } else {
                            state.docs.insert(
                                id.clone(),
                                Synced {
                                    rev: Some(rev.to_string()),
                                    hash: file_hash.clone(),
                                },
                            );
                            report.pushed.push(id.clone());
                        }
                    }
                    _ if result["error"] == "conflict" => report.conflicts.push(format!(
                        "{id}: changed on the instance meanwhile; sync again to fetch it"
                    )),
                    _ => report.errors.push(format!(
                        "{id}: {}",
                        result
                            .get("reason")
                            .or(result.get("error"))
                            .unwrap_or(&Value::Null)
                    )),
                }
            }
        }
        Ok(())
    }

    /// (collection, key, path) of every document file in the folder.
    fn local_files(&self) -> Result<Vec<(String, String, PathBuf)>> {
        let mut files = Vec::new();
        let entries = std::fs::read_dir(&self.root).map_err(|e| ClientError::io(&self.root, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| ClientError::io(&self.root, e))?;
            let Some(collection) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !entry.path().is_dir()
                || !Collection::is_valid(&collection)
                || !self.wanted(&collection)
            {
                continue;
            }
            let dir = entry.path();
            for file in std::fs::read_dir(&dir).map_err(|e| ClientError::io(&dir, e))? {
                let file = file.map_err(|e| ClientError::io(&dir, e))?;
                let Some(name) = file.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if name.ends_with(CONFLICT_SUFFIX) || name.starts_with('.') {
                    continue;
                }
                let Some(stem) = name.strip_suffix(".json") else {
                    continue;
                };
                if let Some(key) = decode_key(stem) {
                    files.push((collection.clone(), key, file.path()));
                }
            }
        }
        files.sort();
        Ok(files)
    }
}

fn read_file(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ClientError::io(path, e)),
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ClientError::io(parent, e))?;
    }
    let temp = path.with_extension("vibe-tmp");
    std::fs::write(&temp, bytes).map_err(|e| ClientError::io(&temp, e))?;
    std::fs::rename(&temp, path).map_err(|e| ClientError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_file_names() {
        for key in ["0190abcd-7", "a/b", ".hidden", "ünï cödé", "x%y", "a.b.c"] {
            let stem = encode_key(key);
            assert!(!stem.contains('/') && !stem.starts_with('.'), "{stem}");
            assert_eq!(decode_key(&stem).as_deref(), Some(key));
        }
        assert_eq!(encode_key("note-1.v2"), "note-1.v2");
        assert_eq!(decode_key("%ZZ"), None);
    }

    #[test]
    fn ids_split_into_collection_and_key() {
        assert_eq!(split_id("notes/1"), Some(("notes", "1")));
        assert_eq!(split_id("_design/x"), None);
        assert_eq!(split_id("notes/"), None);
    }
}
