//! App registration bodies (owner only): upsert with grants, one grant changed, status, app
//! tokens.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema;

/// A grant setting. Only `always` allows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum GrantSetting {
    /// Allowed without asking.
    Always,
    /// The agent asks the owner (the server treats it as not allowed).
    Ask,
    /// Refused.
    Never,
}

impl GrantSetting {
    /// The wire name: `always`, `ask` or `never`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Ask => "ask",
            Self::Never => "never",
        }
    }
}

impl std::str::FromStr for GrantSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        [Self::Always, Self::Ask, Self::Never]
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| format!("{text:?} is not a grant setting: use always, ask or never"))
    }
}

/// Body of `POST /api/v1/apps/upsert`: the app's manifest plus its grants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppUpsert {
    /// The app's id (usually its origin): 1 to 512 characters, not only white space, no
    /// control characters.
    #[schemars(length(min = 1, max = 512), regex(pattern = schema::APP_ID))]
    pub app_id: String,
    /// Display name (not only white space).
    #[schemars(length(min = 1, max = 256), regex(pattern = schema::NOT_BLANK))]
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub description: Option<String>,
    /// Picture URL (a URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(url, length(max = 2048))]
    pub picture_url: Option<String>,
    /// Permissions the app asks for: `read:<c>`, `write:<c>`, `blob:read:<c>`,
    /// `blob:write:<c>`, `blob:delete:<c>` or `sync`.
    #[schemars(inner(regex(pattern = schema::PERMISSION)))]
    pub permissions: Vec<String>,
    /// Permission → setting; absent or `null`: no grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<schema::Grants>")]
    pub grants: Option<BTreeMap<String, GrantSetting>>,
}

/// Body of `POST /api/v1/apps/grant`: set one permission of one registered app, leaving
/// its other grants as they are stored (so a change made elsewhere meanwhile is kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppGrantChange {
    /// The registered app's id.
    #[schemars(length(min = 1, max = 512), regex(pattern = schema::APP_ID))]
    pub app_id: String,
    /// The permission to set: `read:<c>`, `write:<c>`, `blob:read:<c>`, `blob:write:<c>`,
    /// `blob:delete:<c>` or `sync`.
    #[schemars(regex(pattern = schema::PERMISSION))]
    pub permission: String,
    /// Its new setting.
    pub setting: GrantSetting,
    /// Precondition: the setting the caller last saw for this permission (a permission
    /// without a setting counts as `ask`). When the stored setting differs, nothing changes
    /// and the answer is 409. Absent: no precondition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<GrantSetting>,
}

/// `GET /api/v1/apps/status` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    /// Whether the app is registered.
    pub is_registered: bool,
    /// Its manifest (`appId`, `name`, `description?`, `pictureUrl?`, `permissions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::document")]
    pub manifest: Option<Value>,
    /// Permission → setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "schema::Grants")]
    pub grants: Option<BTreeMap<String, GrantSetting>>,
    /// First registration (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<String>,
    /// Last change of grants (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants_updated_at: Option<String>,
    /// When a request authenticated as the app last came (RFC 3339, to the second; up to
    /// a minute behind when another replica served it). The instance sends `null` for a
    /// registered app never seen, and leaves it out for an app not registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::optional_date_time")]
    pub last_seen_at: Option<String>,
}

/// One app in `GET /api/v1/apps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "App")]
pub struct AppInfo {
    /// The app's id.
    pub app_id: String,
    /// Display name.
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Picture URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture_url: Option<String>,
    /// Permissions its manifest asks for.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Permission → setting.
    #[serde(default)]
    #[schemars(with = "schema::Grants")]
    pub grants: BTreeMap<String, GrantSetting>,
    /// First registration (RFC 3339).
    #[schemars(schema_with = "schema::date_time")]
    pub registered_at: String,
    /// Last change of grants (RFC 3339).
    #[schemars(schema_with = "schema::date_time")]
    pub grants_updated_at: String,
    /// When a request authenticated as the app (its token, an owner token acting as it,
    /// one of its devices) last came, to the second; up to a minute behind when another
    /// replica served it; `null`: never seen.
    #[schemars(schema_with = "schema::optional_date_time")]
    pub last_seen_at: Option<String>,
}

/// `GET /api/v1/apps` answer, by app id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppList {
    /// The registered apps.
    pub apps: Vec<AppInfo>,
}

/// Body of `POST /api/v1/apps/token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppTokenRequest {
    /// The registered app the token acts as.
    #[schemars(length(min = 1, max = 512), regex(pattern = schema::APP_ID))]
    pub app_id: String,
}

/// `POST /api/v1/apps/token` answer: a token bound to one app.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppTokenResponse {
    /// The app-bound access token.
    pub access_token: String,
    /// Its expiry (UNIX seconds, despite the name).
    pub access_token_expires_in: i64,
    /// `Bearer`.
    #[serde(default)]
    #[schemars(schema_with = "schema::bearer")]
    pub token_type: String,
}

impl std::fmt::Debug for AppTokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppTokenResponse")
            .field("access_token_expires_in", &self.access_token_expires_in)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::{BodyError, from_slice};

    #[test]
    fn grant_settings_read_and_print_their_wire_names() {
        for setting in [GrantSetting::Always, GrantSetting::Ask, GrantSetting::Never] {
            assert_eq!(setting.as_str().parse::<GrantSetting>(), Ok(setting));
            assert_eq!(serde_json::to_value(setting).unwrap(), setting.as_str());
        }
        assert!("sometimes".parse::<GrantSetting>().is_err());
    }

    #[test]
    fn a_grant_change_names_one_permission_and_refuses_strangers() {
        let change: AppGrantChange = from_slice(
            br#"{"appId":"a","permission":"read:notes","setting":"never","expected":"always"}"#,
        )
        .unwrap();
        assert_eq!(change.setting, GrantSetting::Never);
        assert_eq!(change.expected, Some(GrantSetting::Always));
        let bare: AppGrantChange =
            from_slice(br#"{"appId":"a","permission":"sync","setting":"always"}"#).unwrap();
        assert_eq!(bare.expected, None);
        assert_eq!(
            from_slice::<AppGrantChange>(
                br#"{"appId":"a","permission":"sync","setting":"always","grants":{}}"#
            ),
            Err(BodyError::Invalid("Unknown field 'grants'.".into()))
        );
        assert!(
            from_slice::<AppGrantChange>(br#"{"appId":"a","permission":"sync"}"#).is_err(),
            "the setting is required"
        );
    }

    #[test]
    fn upsert_reads_the_manifest_and_refuses_strangers() {
        let app: AppUpsert = from_slice(
            br#"{"appId":"a","name":"A","permissions":["read:notes"],"grants":{"read:notes":"always"},"description":null}"#,
        )
        .unwrap();
        assert_eq!(app.grants.unwrap()["read:notes"], GrantSetting::Always);
        assert_eq!(app.description, None);
        assert_eq!(
            from_slice::<AppUpsert>(br#"{"appId":"a","name":"A","permissions":[],"userDid":"x"}"#),
            Err(BodyError::Invalid("Unknown field 'userDid'.".into()))
        );
        let wrong = from_slice::<AppUpsert>(
            br#"{"appId":"a","name":"A","permissions":[],"grants":{"sync":"sometimes"}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            wrong.starts_with("'grants.sync': unknown variant"),
            "{wrong}"
        );
    }
}
