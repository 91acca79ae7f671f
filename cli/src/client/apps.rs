//! Apps and grants (owner only): register/update, status, list, remove, app tokens.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Client, TokenSource};
use crate::error::{ClientError, Result};

/// `GET /api/v1/apps/status` answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    /// Whether the app is registered.
    pub is_registered: bool,
    /// Its manifest (`appId`, `name`, `description?`, `pictureUrl?`, `permissions`).
    #[serde(default)]
    pub manifest: Option<Value>,
    /// Permission → `always` | `ask` | `never`.
    #[serde(default)]
    pub grants: BTreeMap<String, String>,
}

/// `POST /api/v1/apps/token` answer: a token bound to one app.
#[derive(Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppToken {
    /// The app-bound access token.
    pub access_token: String,
    /// Its expiry (UNIX seconds).
    pub access_token_expires_in: i64,
    /// `Bearer`.
    #[serde(default)]
    pub token_type: String,
}

impl std::fmt::Debug for AppToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppToken")
            .field("access_token_expires_in", &self.access_token_expires_in)
            .finish_non_exhaustive()
    }
}

/// A permission string the instance understands: `read:<c>`, `write:<c>`,
/// `blob:read:<c>`, `blob:write:<c>`, `blob:delete:<c>` or `sync`.
pub fn check_permission(permission: &str) -> Result<()> {
    let collection = permission
        .strip_prefix("read:")
        .or_else(|| permission.strip_prefix("write:"))
        .or_else(|| permission.strip_prefix("blob:read:"))
        .or_else(|| permission.strip_prefix("blob:write:"))
        .or_else(|| permission.strip_prefix("blob:delete:"));
    match collection {
        Some(c) if !c.is_empty() => Ok(()),
        None if permission == "sync" => Ok(()),
        _ => Err(ClientError::Usage(format!(
            "{permission:?} is not a permission: use read:<collection>, write:<collection>, \
             blob:read:<collection>, blob:write:<collection>, blob:delete:<collection> or sync"
        ))),
    }
}

impl Client {
    /// `POST /api/v1/apps/upsert` with a full manifest + grants body. Returns the HTTP
    /// status (201 created, 200 updated) and the body.
    pub async fn upsert_app(&self, manifest: &Value) -> Result<(u16, Value)> {
        let response = self
            .as_owner()
            .send("POST /api/v1/apps/upsert", |i| {
                i.request(Method::POST, "api/v1/apps/upsert").json(manifest)
            })
            .await?;
        let status = response.status().as_u16();
        let body = super::decode(response, "POST /api/v1/apps/upsert").await?;
        Ok((status, body))
    }

    /// `GET /api/v1/apps/status?appId=`.
    pub async fn app_status(&self, app_id: &str) -> Result<AppStatus> {
        self.as_owner()
            .send_json("GET /api/v1/apps/status", |i| {
                i.request(Method::GET, "api/v1/apps/status")
                    .query(&[("appId", app_id)])
            })
            .await
    }

    /// `GET /api/v1/apps`.
    pub async fn list_apps(&self) -> Result<Value> {
        self.as_owner()
            .send_json("GET /api/v1/apps", |i| {
                i.request(Method::GET, "api/v1/apps")
            })
            .await
    }

    /// `DELETE /api/v1/apps/{appId}`.
    pub async fn remove_app(&self, app_id: &str) -> Result<()> {
        let mut url = self.instance().endpoint("api/v1/apps");
        url.path_segments_mut()
            .expect("http URLs have paths")
            .push(app_id);
        self.as_owner()
            .send("DELETE /api/v1/apps/{appId}", |i| {
                i.http().request(Method::DELETE, url.clone())
            })
            .await?;
        Ok(())
    }

    /// Set `permissions` to `setting` (`always`, `ask`, `never`) for `app_id`, registering
    /// the app when it is new (with `name`, defaulting to the id) and keeping every other
    /// permission and grant it has. Returns the status after the change.
    pub async fn set_grants(
        &self,
        app_id: &str,
        name: Option<&str>,
        permissions: &[String],
        setting: &str,
    ) -> Result<AppStatus> {
        for permission in permissions {
            check_permission(permission)?;
        }
        let current = self.app_status(app_id).await?;
        let manifest = current.manifest.clone().unwrap_or_else(|| json!({}));
        let mut requested: Vec<String> = manifest["permissions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for permission in permissions {
            if !requested.contains(permission) {
                requested.push(permission.clone());
            }
        }
        let mut grants = current.grants.clone();
        for permission in permissions {
            grants.insert(permission.clone(), setting.to_string());
        }
        let mut body = json!({
            "appId": app_id,
            "name": name
                .map(str::to_string)
                .or_else(|| manifest["name"].as_str().map(str::to_string))
                .unwrap_or_else(|| app_id.to_string()),
            "permissions": requested,
            "grants": grants,
        });
        for key in ["description", "pictureUrl"] {
            if let Some(value) = manifest.get(key).filter(|v| !v.is_null()) {
                body[key] = value.clone();
            }
        }
        self.upsert_app(&body).await?;
        self.app_status(app_id).await
    }

    /// `POST /api/v1/apps/token` `{appId}`: a token that acts as that app only.
    pub async fn app_token(&self, app_id: &str) -> Result<AppToken> {
        self.as_owner()
            .send_json("POST /api/v1/apps/token", |i| {
                i.request(Method::POST, "api/v1/apps/token")
                    .json(&json!({ "appId": app_id }))
            })
            .await
    }

    /// A client that authenticates with a fresh app-bound token for `app_id`.
    pub async fn app_client(&self, app_id: &str) -> Result<Client> {
        let token = self.app_token(app_id).await?;
        Ok(Client::new(
            self.instance().clone(),
            TokenSource::fixed(token.access_token),
        ))
    }
}
