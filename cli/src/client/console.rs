//! The owner console (owner only): a one-time code for `<instance>/console/`, and the
//! exchange the page makes (also used by tests).

use reqwest::Method;
use vibe_api::auth::TokenResponse;
use vibe_api::console::{ConsoleCodeRequest, ConsoleCodeResponse, ConsoleSessionRequest};

use super::{Client, Instance};
use crate::error::Result;

impl Client {
    /// `POST /api/v1/console/code` `{ttlSeconds?}`: a one-time console code and link.
    pub async fn console_code(&self, ttl_seconds: Option<u64>) -> Result<ConsoleCodeResponse> {
        let body = ConsoleCodeRequest { ttl_seconds };
        self.as_owner()
            .send_json("POST /api/v1/console/code", |i| {
                i.request(Method::POST, "api/v1/console/code").json(&body)
            })
            .await
    }
}

impl Instance {
    /// `POST /api/v1/console/session` `{code}`: what the console page does with a code.
    pub async fn console_session(&self, code: &str) -> Result<TokenResponse> {
        let body = ConsoleSessionRequest {
            code: code.to_string(),
        };
        super::send_json(
            self.request(Method::POST, "api/v1/console/session")
                .json(&body),
            "POST /api/v1/console/session",
        )
        .await
    }
}
