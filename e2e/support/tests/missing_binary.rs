//! Without an installed server the error says how to install it. (Own test binary: it changes
//! the process environment.)

use vibe_test_support::{CouchServer, S3Server, SupportError};

#[tokio::test]
async fn missing_binaries_point_to_the_install_script() {
    if vibe_test_support::skip_with_external_couchdb(
        "checks the error for a missing pouchdb-server",
    ) {
        return;
    }
    // SAFETY: this test binary has a single test, so no other thread reads the environment.
    unsafe {
        std::env::set_var("VIBE_POUCHDB_SERVER_BIN", "/nonexistent/pouchdb-server");
        std::env::set_var("VIBE_S3S_FS_BIN", "/nonexistent/s3s-fs");
    }
    let couch = CouchServer::start().await.expect_err("no binary");
    assert!(matches!(couch, SupportError::MissingBinary { .. }));
    let message = couch.to_string();
    assert!(message.contains("/nonexistent/pouchdb-server"), "{message}");
    assert!(
        message.contains("deploy/local/install-servers"),
        "{message}"
    );

    let s3 = S3Server::start().await.expect_err("no binary");
    assert!(s3.to_string().contains("VIBE_S3S_FS_BIN"), "{s3}");
}
