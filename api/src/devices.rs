//! Trusted sync devices (owner only): what `GET /api/v1/devices` lists.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema;

/// `POST /api/v1/devices`: trust a new sync device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceRegistration {
    /// A name the owner recognises it by (1 to 256 characters, not only white space).
    #[schemars(length(min = 1, max = 256), regex(pattern = schema::NOT_BLANK))]
    pub name: String,
    /// Act as this registered app (its `sync` grant is needed to sync); absent or `null`:
    /// the owner's own device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = schema::APP_ID))]
    pub app_id: Option<String>,
    /// Permissions the device may use (absent or `null`: `["sync"]`); an app's device also
    /// needs the app's grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), inner(regex(pattern = schema::PERMISSION)))]
    pub scopes: Option<Vec<String>>,
}

/// One trusted device (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "Device")]
pub struct DeviceInfo {
    /// 32 hex digits; the user name of its HTTP Basic credentials.
    #[schemars(regex(pattern = "^[0-9a-f]{32}$"))]
    pub device_id: String,
    /// The name it was registered with.
    pub name: String,
    /// The app it acts as; `null`: the owner's own device.
    pub app_id: Option<String>,
    /// What it may do (`sync`, `read:<c>`, …).
    pub scopes: Vec<String>,
    /// When it was registered (RFC 3339).
    #[schemars(schema_with = "schema::date_time")]
    pub created_at: String,
    /// When a request with its credentials last came (RFC 3339, to the second; up to a
    /// minute behind when another replica served it); `null`: never seen.
    #[schemars(schema_with = "schema::optional_date_time")]
    pub last_seen_at: Option<String>,
}

/// `GET /api/v1/devices` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceList {
    /// The trusted devices.
    pub devices: Vec<DeviceInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_seen_is_null_not_absent() {
        let device = DeviceInfo {
            device_id: "0".repeat(32),
            name: "Phone".into(),
            app_id: None,
            scopes: vec!["sync".into()],
            created_at: "2026-12-04T00:00:00.000Z".into(),
            last_seen_at: None,
        };
        let json = serde_json::to_value(&device).unwrap();
        assert_eq!(json["lastSeenAt"], serde_json::Value::Null);
        assert_eq!(json["appId"], serde_json::Value::Null);
        assert_eq!(serde_json::from_value::<DeviceInfo>(json).unwrap(), device);
    }
}
