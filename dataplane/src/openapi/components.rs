//! The component schemas of the OpenAPI document that are generated from `vibe-api`'s types
//! (`#[derive(JsonSchema)]`, constraints in `vibe_api::schema`), and the splice that writes
//! them into `dataplane/openapi.json`.
//!
//! Paths and the few schemas no type describes (`Error`, …) stay written by
//! hand in that file; every schema named here is replaced by its generated form. Request
//! bodies are described as the data plane reads them (a field with a default is optional),
//! answers as it writes them (a field it always writes is required). `cargo run -p
//! vibe-dataplane --bin openapigen` rewrites the file; a test fails while it is stale.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value};
use vibe_api::{apps, auth, blobs, console, devices, documents, export};

/// Where component schemas live in an OpenAPI document.
const DEFINITIONS_PATH: &str = "/components/schemas";

fn generator(settings: SchemaSettings) -> SchemaGenerator {
    settings
        .with(|s| {
            s.definitions_path = DEFINITIONS_PATH.into();
            s.meta_schema = None;
        })
        .into_generator()
}

/// Adds `T` (and every type it names) to `generator`'s definitions.
fn add<T: JsonSchema>(generator: &mut SchemaGenerator) {
    generator.subschema_for::<T>();
}

/// The generated component schemas, by name.
///
/// # Panics
/// When a request type and an answer type that share a name are described differently
/// (a mistake in `vibe-api`, caught by the tests).
pub fn generated() -> Map<String, Value> {
    let mut requests = generator(SchemaSettings::draft2020_12().for_deserialize());
    add::<auth::LoginRequest>(&mut requests);
    add::<auth::RefreshRequest>(&mut requests);
    add::<auth::ClaimRequest>(&mut requests);
    add::<apps::AppUpsert>(&mut requests);
    add::<apps::AppGrantChange>(&mut requests);
    add::<apps::AppTokenRequest>(&mut requests);
    add::<documents::ReadQuery>(&mut requests);
    add::<documents::WriteRequest>(&mut requests);
    add::<blobs::UploadUrlRequest>(&mut requests);
    add::<blobs::FinalizeUploadRequest>(&mut requests);
    add::<devices::DeviceRegistration>(&mut requests);
    add::<console::ConsoleCodeRequest>(&mut requests);
    add::<console::ConsoleSessionRequest>(&mut requests);

    let mut answers = generator(SchemaSettings::draft2020_12().for_serialize());
    add::<auth::ChallengeResponse>(&mut answers);
    add::<blobs::UploadUrlResponse>(&mut answers);
    add::<blobs::BlobMetadata>(&mut answers);
    add::<auth::TokenResponse>(&mut answers);
    add::<auth::ClaimResponse>(&mut answers);
    add::<apps::AppList>(&mut answers);
    add::<apps::AppStatus>(&mut answers);
    add::<apps::AppTokenResponse>(&mut answers);
    add::<documents::Page>(&mut answers);
    add::<documents::WriteResult>(&mut answers);
    add::<devices::DeviceList>(&mut answers);
    add::<export::ImportReport>(&mut answers);
    add::<export::RestoreOutcome>(&mut answers);
    add::<console::ConsoleCodeResponse>(&mut answers);
    add::<console::ConsoleOverview>(&mut answers);
    add::<console::SessionList>(&mut answers);
    add::<console::LogoutAllResponse>(&mut answers);
    add::<console::CollectionList>(&mut answers);
    add::<console::DocumentList>(&mut answers);
    add::<console::BlobList>(&mut answers);

    let mut schemas = requests.take_definitions(true);
    schemas.values_mut().for_each(tidy);
    for (name, mut schema) in answers.take_definitions(true) {
        tidy(&mut schema);
        if let Some(as_request) = schemas.get(&name) {
            assert_eq!(
                as_request, &schema,
                "{name} is described differently as a request body and as an answer"
            );
        }
        schemas.insert(name, schema);
    }
    schemas
}

/// Makes generated schemas read like written ones: a description's wrapped lines (from
/// `///` comments) joined into one paragraph, and no `default` on a property that is
/// required (a serde default the data plane refuses to rely on, such as a read's
/// `collection`).
fn tidy(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(text)) = map.get_mut("description") {
                *text = text
                    .split("\n\n")
                    .map(|paragraph| paragraph.replace('\n', " "))
                    .collect::<Vec<_>>()
                    .join("\n\n");
            }
            let required: Vec<String> = map
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|name| name.as_str().map(str::to_string))
                .collect();
            if let Some(Value::Object(properties)) = map.get_mut("properties") {
                for name in &required {
                    if let Some(Value::Object(property)) = properties.get_mut(name) {
                        property.remove("default");
                    }
                }
            }
            map.values_mut().for_each(tidy);
        }
        Value::Array(items) => items.iter_mut().for_each(tidy),
        _ => {}
    }
}

/// Error of [`splice`]: the document is not what it should be.
#[derive(Debug, thiserror::Error)]
pub enum SpliceError {
    /// Not JSON.
    #[error("the OpenAPI document is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but `components` is not the last member of the top-level object.
    #[error("the OpenAPI document must end with its `components` object")]
    Layout,
}

/// The document `text` with its component schemas replaced by [`generated`] ones (others
/// kept), written as `openapigen` writes it: everything before `components` as it was,
/// `components` pretty-printed (two spaces, keys sorted), a final newline.
pub fn splice(text: &str) -> Result<String, SpliceError> {
    let mut doc: Value = serde_json::from_str(text)?;
    let marker = "\n  \"components\": ";
    let start = text.rfind(marker).ok_or(SpliceError::Layout)?;
    let components = doc
        .get_mut("components")
        .and_then(Value::as_object_mut)
        .ok_or(SpliceError::Layout)?;
    let schemas = components
        .entry("schemas")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or(SpliceError::Layout)?;
    for (name, schema) in generated() {
        schemas.insert(name, schema);
    }
    let components = serde_json::to_string_pretty(components)?.replace('\n', "\n  ");
    Ok(format!("{}{marker}{components}\n}}\n", &text[..start]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_closed_and_answers_name_what_is_always_written() {
        let schemas = generated();
        assert_eq!(schemas["LoginRequest"]["additionalProperties"], false);
        // The blob bodies are the original SDK's: fields they do not know are accepted.
        assert_eq!(
            schemas["UploadUrlRequest"].get("additionalProperties"),
            None
        );
        // A read's collection has a serde default, but an absent one is refused.
        assert!(
            schemas["ReadRequest"]["required"]
                .as_array()
                .unwrap()
                .contains(&"collection".into())
        );
        // lastSeenAt is always written (null: never seen).
        assert!(
            schemas["Device"]["required"]
                .as_array()
                .unwrap()
                .contains(&"lastSeenAt".into())
        );
    }

    #[test]
    fn splicing_keeps_what_precedes_components_and_is_stable() {
        let text = "{\n  \"openapi\": \"3.1.0\",\n  \"paths\": {\"/b\": {}, \"/a\": {}},\n  \"components\": {\n    \"schemas\": {\n      \"Error\": {}\n    }\n  }\n}\n";
        let once = splice(text).unwrap();
        assert!(once.starts_with("{\n  \"openapi\": \"3.1.0\",\n  \"paths\": {\"/b\": {}, \"/a\": {}},\n  \"components\": {\n"));
        let doc: Value = serde_json::from_str(&once).unwrap();
        assert_eq!(doc["components"]["schemas"]["Error"], serde_json::json!({}));
        assert!(doc["components"]["schemas"]["LoginRequest"].is_object());
        assert_eq!(splice(&once).unwrap(), once);
        assert!(matches!(
            splice("{\"components\": {}, \"paths\": {}}"),
            Err(SpliceError::Layout)
        ));
    }
}
