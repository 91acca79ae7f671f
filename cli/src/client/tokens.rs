//! Where a [`Client`](super::Client) gets its bearer token: a fixed token (an app token,
//! or an access token a test holds) or an owner session that refreshes itself and tells
//! an observer (the CLI's session store) about every rotation.

use std::fmt;
use std::sync::Arc;

use tokio::sync::Mutex;

use super::{Instance, Tokens};
use crate::error::{ClientError, Result};

/// Seconds before expiry at which an access token is refreshed ahead of use.
const REFRESH_MARGIN_SECONDS: i64 = 60;

/// Called with the new tokens after every refresh (to persist them).
pub type RefreshObserver = Arc<dyn Fn(&Tokens) + Send + Sync>;

/// A shared, cloneable source of bearer tokens.
#[derive(Clone)]
pub struct TokenSource {
    inner: Arc<Inner>,
}

enum Inner {
    Fixed(String),
    Session {
        tokens: Mutex<Tokens>,
        observer: Option<RefreshObserver>,
    },
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.inner {
            Inner::Fixed(_) => f.write_str("TokenSource::Fixed(..)"),
            Inner::Session { .. } => f.write_str("TokenSource::Session(..)"),
        }
    }
}

impl TokenSource {
    /// Always use `token` (never refreshed).
    pub fn fixed(token: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner::Fixed(token.into())),
        }
    }

    /// An owner session from a login; refreshed with its refresh token when needed.
    pub fn session(tokens: Tokens) -> Self {
        Self::session_observed(tokens, None)
    }

    /// An owner session whose refreshes are reported to `observer`.
    pub fn session_observed(tokens: Tokens, observer: Option<RefreshObserver>) -> Self {
        Self {
            inner: Arc::new(Inner::Session {
                tokens: Mutex::new(tokens),
                observer,
            }),
        }
    }

    /// Whether this source can refresh (a session with a refresh token).
    pub fn can_refresh(&self) -> bool {
        matches!(&*self.inner, Inner::Session { .. })
    }

    /// The current tokens of a session (`None` for a fixed token).
    pub async fn current(&self) -> Option<Tokens> {
        match &*self.inner {
            Inner::Fixed(_) => None,
            Inner::Session { tokens, .. } => Some(tokens.lock().await.clone()),
        }
    }

    /// A usable access token, refreshing a session first if it expires within a minute.
    pub async fn access_token(&self, instance: &Instance) -> Result<String> {
        match &*self.inner {
            Inner::Fixed(token) => Ok(token.clone()),
            Inner::Session { tokens, observer } => {
                let mut tokens = tokens.lock().await;
                let now = chrono::Utc::now().timestamp();
                if tokens.access_token_expires_in - now <= REFRESH_MARGIN_SECONDS {
                    refresh_locked(&mut tokens, instance, observer.as_ref()).await?;
                }
                Ok(tokens.access_token.clone())
            }
        }
    }

    /// Refresh now because `rejected` was refused, unless another task already did.
    pub async fn force_refresh(&self, instance: &Instance, rejected: &str) -> Result<()> {
        if let Inner::Session { tokens, observer } = &*self.inner {
            let mut tokens = tokens.lock().await;
            if tokens.access_token == rejected {
                refresh_locked(&mut tokens, instance, observer.as_ref()).await?;
            }
        }
        Ok(())
    }
}

async fn refresh_locked(
    tokens: &mut Tokens,
    instance: &Instance,
    observer: Option<&RefreshObserver>,
) -> Result<()> {
    let now = chrono::Utc::now().timestamp();
    if tokens.refresh_token_expires_at <= now {
        return Err(ClientError::SessionExpired {
            instance: instance.url(),
        });
    }
    let fresh = match instance.refresh(&tokens.refresh_token).await {
        Ok(fresh) => fresh,
        Err(ClientError::Api { status: 401, .. }) => {
            return Err(ClientError::SessionExpired {
                instance: instance.url(),
            });
        }
        Err(e) => return Err(e),
    };
    *tokens = fresh;
    if let Some(observer) = observer {
        observer(tokens);
    }
    Ok(())
}
