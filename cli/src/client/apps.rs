//! Apps and grants (owner only): register/update, status, list, remove, app tokens.

use reqwest::Method;
use serde_json::{Value, json};
use vibe_api::apps::{AppTokenRequest, AppTokenResponse, AppUpsert, GrantSetting};

use super::{Client, TokenSource};
use crate::error::{ClientError, Result};

pub use vibe_api::apps::AppStatus;

/// `POST /api/v1/apps/token` answer: a token bound to one app.
pub type AppToken = AppTokenResponse;

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
    pub async fn upsert_app(&self, manifest: &AppUpsert) -> Result<(u16, Value)> {
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
        let setting: GrantSetting = setting.parse().map_err(ClientError::Usage)?;
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
        let mut grants = current.grants.clone().unwrap_or_default();
        for permission in permissions {
            grants.insert(permission.clone(), setting);
        }
        let text = |key: &str| manifest[key].as_str().map(str::to_string);
        let body = AppUpsert {
            app_id: app_id.to_string(),
            name: name
                .map(str::to_string)
                .or_else(|| text("name"))
                .unwrap_or_else(|| app_id.to_string()),
            description: text("description"),
            picture_url: text("pictureUrl"),
            permissions: requested,
            grants: Some(grants),
        };
        self.upsert_app(&body).await?;
        self.app_status(app_id).await
    }

    /// `POST /api/v1/apps/token` `{appId}`: a token that acts as that app only.
    pub async fn app_token(&self, app_id: &str) -> Result<AppToken> {
        self.as_owner()
            .send_json("POST /api/v1/apps/token", |i| {
                i.request(Method::POST, "api/v1/apps/token")
                    .json(&AppTokenRequest {
                        app_id: app_id.to_string(),
                    })
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
