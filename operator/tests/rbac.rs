//! Compiles `src/rbac.rs` on its own and runs its tests: the chart's RBAC
//! (`charts/vibe-operator/files/rbac.yaml`) must equal `REQUIRED`, and the request resolver must
//! authorize requests as the API server does.

#[allow(dead_code)]
#[path = "../src/rbac.rs"]
mod rbac;
