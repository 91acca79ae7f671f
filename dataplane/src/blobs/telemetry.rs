//! An interceptor on the S3 client: every call carries the id of the HTTP request that made
//! it (`x-request-id`) and every attempt is timed into the metrics by operation and status.
//!
//! Presigned URLs go through the same pipeline up to signing but are never sent: they are
//! not timed, and [`super::store`] leaves the header out of what it hands to clients.

use std::sync::Arc;
use std::time::Instant;

use aws_sdk_s3::config::interceptors::{
    BeforeTransmitInterceptorContextMut, BeforeTransmitInterceptorContextRef,
    FinalizerInterceptorContextRef,
};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::config_bag::{Storable, StoreReplace};

use crate::metrics::Metrics;
use crate::metrics::layer::{REQUEST_ID_HEADER, current_request_id};

/// The S3 client's interceptor (see the module documentation).
#[derive(Debug)]
pub(crate) struct Telemetry {
    pub(crate) metrics: Option<Arc<Metrics>>,
}

/// When the current attempt was handed to the transport.
#[derive(Debug, Clone, Copy)]
struct AttemptStart(Instant);

impl Storable for AttemptStart {
    type Storer = StoreReplace<Self>;
}

impl Intercept for Telemetry {
    fn name(&self) -> &'static str {
        "VibeTelemetry"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(id) = current_request_id().and_then(|id| id.to_str().ok().map(str::to_owned)) {
            // Not signed (added after signing), so it never changes a signature.
            context
                .request_mut()
                .headers_mut()
                .insert(REQUEST_ID_HEADER.as_str(), id);
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state()
            .store_put(AttemptStart(Instant::now()));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(metrics) = &self.metrics else {
            return Ok(());
        };
        let Some(AttemptStart(start)) = cfg.load::<AttemptStart>().copied() else {
            return Ok(());
        };
        let status = context.response().map(|r| r.status().as_u16());
        if status.is_none() && context.output_or_error().is_none() {
            // Stopped before transmitting: a presigned URL.
            return Ok(());
        }
        let operation = cfg.load::<Metadata>().map_or("unknown", Metadata::name);
        metrics.s3_call(operation, status, start.elapsed());
        Ok(())
    }
}
