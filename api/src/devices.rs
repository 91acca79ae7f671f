//! Trusted sync devices (owner only): what `GET /api/v1/devices` lists.

use serde::{Deserialize, Serialize};

/// `POST /api/v1/devices`: trust a new sync device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceRegistration {
    /// A name the owner recognises it by (1 to 256 characters, not only white space).
    pub name: String,
    /// The registered app it acts as (see [`crate::app_id`]); `None`: the owner's own
    /// device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// What it may do; `None`: `["sync"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
}

/// One trusted device (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    /// 32 hex digits; the user name of its HTTP Basic credentials.
    pub device_id: String,
    /// The name it was registered with.
    pub name: String,
    /// The app it acts as; `None` (`null`): the owner's own device.
    pub app_id: Option<String>,
    /// What it may do (`sync`, `read:<c>`, …).
    pub scopes: Vec<String>,
    /// When it was registered (RFC 3339).
    pub created_at: String,
    /// When a request with its credentials last came (RFC 3339, to the second; up to a
    /// minute behind when another replica served it); `None` (`null`): never seen.
    pub last_seen_at: Option<String>,
}

/// `GET /api/v1/devices` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
