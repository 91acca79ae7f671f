//! The validating admission webhook for `VibeInstance` (AdmissionReview `admission.k8s.io/v1`).
//!
//! `POST /validate/vibeinstance` takes an AdmissionReview and answers with one; a denial carries
//! HTTP-like code 422 and every broken rule in one message, so `kubectl apply` prints e.g.
//! `admission webhook "vibeinstances.cloud.vibeapp.dev" denied the request: spec.host: …`.

pub mod hosts;
pub mod quantity;
pub mod rules;
pub mod server;
pub mod tls;

use crate::crd::VibeInstance;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use axum::{Json, Router};
use hosts::HostIndex;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use rules::{ImageAllowList, RuleContext};
use std::sync::Arc;

/// Path the ValidatingWebhookConfiguration points at.
pub const VALIDATE_PATH: &str = "/validate/vibeinstance";

/// Largest AdmissionReview accepted: old and new object of up to 1.5 MiB each, plus envelope.
pub const MAX_REVIEW_BYTES: usize = 4 * 1024 * 1024;

/// What the webhook consults.
#[derive(Clone)]
pub struct WebhookState {
    /// Who serves which host.
    pub hosts: Arc<dyn HostIndex>,
    /// Base domain of default hosts.
    pub base_domain: String,
    /// Allowed images (empty: all).
    pub images: ImageAllowList,
    /// Whether the host cache has completed its first list; until then requests are refused
    /// (a host conflict could go unseen), and the API server retries or reports it.
    pub cache_ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// The platform's backup bucket, if the operator has one (`--backup-bucket`).
    pub backup_bucket: Option<String>,
}

impl WebhookState {
    /// A state whose cache is always ready (tests, static host tables).
    pub fn new(
        hosts: Arc<dyn HostIndex>,
        base_domain: impl Into<String>,
        images: ImageAllowList,
    ) -> Self {
        Self {
            hosts,
            base_domain: base_domain.into(),
            images,
            cache_ready: Arc::new(|| true),
            backup_bucket: None,
        }
    }
}

/// The webhook's routes (served over HTTPS).
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route(VALIDATE_PATH, post(validate_handler))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(state)
}

async fn validate_handler(
    State(state): State<WebhookState>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    Json(review_response(&state, review).into_review())
}

/// Judges one AdmissionReview. Never fails: malformed input is answered with a denial.
pub fn review_response(
    state: &WebhookState,
    review: AdmissionReview<DynamicObject>,
) -> AdmissionResponse {
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(_) => return AdmissionResponse::invalid("the AdmissionReview has no request"),
    };
    let response = AdmissionResponse::from(&request);
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return response;
    }
    let new = match typed(request.object.as_ref()) {
        Ok(Some(new)) => new,
        Ok(None) => return deny(response, "the request carries no object".into()),
        Err(err) => {
            return deny(
                response,
                format!("the object is not a valid VibeInstance: {err}"),
            );
        }
    };
    let old = match typed(request.old_object.as_ref()) {
        Ok(old) => old,
        Err(err) => {
            return deny(
                response,
                format!("the stored object is not a valid VibeInstance: {err}"),
            );
        }
    };
    if !(state.cache_ready)() {
        let mut response = deny(
            response,
            "the vibe-operator is still loading its cache of VibeInstances; retry in a few seconds"
                .into(),
        );
        response.result.code = 503;
        response.result.reason = "ServiceUnavailable".into();
        return response;
    }
    let ctx = RuleContext {
        hosts: state.hosts.as_ref(),
        base_domain: &state.base_domain,
        images: &state.images,
        backup_bucket: state.backup_bucket.as_deref(),
    };
    let violations = rules::validate(&new, old.as_ref(), &ctx);
    if violations.is_empty() {
        return response;
    }
    tracing::info!(
        namespace = request.namespace.as_deref().unwrap_or_default(),
        name = %request.name,
        operation = ?request.operation,
        fields = ?violations.iter().map(|v| v.field).collect::<Vec<_>>(),
        "denied VibeInstance admission"
    );
    let message = violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    deny(response, message)
}

fn deny(response: AdmissionResponse, message: String) -> AdmissionResponse {
    let mut response = response.deny(message);
    response.result.code = 422;
    response.result.reason = "Invalid".into();
    response
}

fn typed(object: Option<&DynamicObject>) -> Result<Option<VibeInstance>, serde_json::Error> {
    object
        .map(|o| serde_json::to_value(o).and_then(serde_json::from_value))
        .transpose()
}
