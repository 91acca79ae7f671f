//! Device credentials (owner only): register a device for long-running sync, list the
//! trusted devices, revoke one.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use vibe_api::devices::DeviceRegistration;

use super::Client;
use crate::error::Result;

/// The Basic credentials of a registered device (shown once, at registration).
#[derive(Clone, Deserialize, Serialize)]
pub struct DeviceCredentials {
    /// The device id.
    pub username: String,
    /// The device secret.
    pub password: String,
}

impl std::fmt::Debug for DeviceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl DeviceCredentials {
    /// The `Authorization` header value a replicator sends (`Basic …`).
    pub fn authorization(&self) -> String {
        use base64::Engine;
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// `POST /api/v1/devices` answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredDevice {
    /// The device id.
    pub device_id: String,
    /// Its name.
    pub name: String,
    /// The app it acts as (none: the owner's own device).
    #[serde(default)]
    pub app_id: Option<String>,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// The replication endpoint.
    pub sync_url: String,
    /// Its credentials.
    pub credentials: DeviceCredentials,
}

impl Client {
    /// `POST /api/v1/devices` `{name, appId?, scopes?}`.
    pub async fn register_device(
        &self,
        name: &str,
        app_id: Option<&str>,
        scopes: &[String],
    ) -> Result<RegisteredDevice> {
        let body = DeviceRegistration {
            name: name.to_string(),
            app_id: app_id.map(str::to_string),
            scopes: (!scopes.is_empty()).then(|| scopes.to_vec()),
        };
        self.as_owner()
            .send_json("POST /api/v1/devices", |i| {
                i.request(Method::POST, "api/v1/devices").json(&body)
            })
            .await
    }

    /// `GET /api/v1/devices`.
    pub async fn list_devices(&self) -> Result<Value> {
        self.as_owner()
            .send_json("GET /api/v1/devices", |i| {
                i.request(Method::GET, "api/v1/devices")
            })
            .await
    }

    /// `DELETE /api/v1/devices/{deviceId}`.
    pub async fn revoke_device(&self, device_id: &str) -> Result<()> {
        let mut url = self.instance().endpoint("api/v1/devices");
        url.path_segments_mut()
            .expect("http URLs have paths")
            .push(device_id);
        self.as_owner()
            .send("DELETE /api/v1/devices/{deviceId}", |i| {
                i.http().request(Method::DELETE, url.clone())
            })
            .await?;
        Ok(())
    }
}
