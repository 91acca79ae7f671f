//! Apps and grants (owner only): register/update, one grant changed, status, list, remove,
//! app tokens.

use reqwest::Method;
use serde_json::Value;
use vibe_api::apps::{AppGrantChange, AppTokenRequest, AppTokenResponse, AppUpsert, GrantSetting};

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

    /// `POST /api/v1/apps/grant` `{appId, permission, setting, expected?}`: set one
    /// permission of a registered app; the instance keeps every other grant as stored.
    /// With `expected`, nothing changes (409) unless the permission's setting is still that
    /// (`ask` when it has none). Returns the app as `GET /api/v1/apps` lists it.
    pub async fn set_grant(
        &self,
        app_id: &str,
        permission: &str,
        setting: GrantSetting,
        expected: Option<GrantSetting>,
    ) -> Result<Value> {
        check_permission(permission)?;
        let change = AppGrantChange {
            app_id: app_id.to_string(),
            permission: permission.to_string(),
            setting,
            expected,
        };
        self.as_owner()
            .send_json("POST /api/v1/apps/grant", |i| {
                i.request(Method::POST, "api/v1/apps/grant").json(&change)
            })
            .await
    }

    /// Set `permissions` to `setting` (`always`, `ask`, `never`) for `app_id`. A registered
    /// app gets one `POST /api/v1/apps/grant` per permission, so a grant changed elsewhere
    /// meanwhile is never put back (its name stays; `name` is for a new app). A new app is
    /// registered (with `name`, defaulting to the id) asking for `permissions`. Returns the
    /// status after the change.
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
        if current.is_registered {
            // One change at a time, and the first that takes access away ends the app's
            // open streams. So reads go first: a WebSocket then hears which of its
            // subscriptions lost their grant (`{"status":"revoked"}`) before it closes.
            let mut ordered: Vec<&String> = permissions.iter().collect();
            ordered.sort_by_key(|p| !p.starts_with("read:"));
            for permission in ordered {
                self.set_grant(app_id, permission, setting, None).await?;
            }
        } else {
            let body = AppUpsert {
                app_id: app_id.to_string(),
                name: name.unwrap_or(app_id).to_string(),
                description: None,
                picture_url: None,
                permissions: permissions.to_vec(),
                grants: Some(permissions.iter().map(|p| (p.clone(), setting)).collect()),
            };
            self.upsert_app(&body).await?;
        }
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
