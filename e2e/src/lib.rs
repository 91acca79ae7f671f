//! The end-to-end harness of Vibe Cloud: real instances for the suite and the benchmarks.
//!
//! - [`stack`]: the built data plane plus real test servers, for the suite and benchmarks;
//! - [`bench`]: the `vibe-bench` benchmark harness.
//!
//! The end-to-end suite (`e2e/tests/`) drives real instances through the `vibe` client
//! library (crate `vibe-cli`) and through the built `vibe` binary ([`stack::vibe_binary`]).

pub mod bench;
pub mod stack;
