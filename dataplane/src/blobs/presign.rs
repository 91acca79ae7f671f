//! Presigned `PUT` URLs for path-style buckets, signed with `aws-sigv4` directly.
//!
//! The SDK's presigner (`put_object().presigned(…)`) runs a whole request through its
//! orchestrator — interceptors, endpoint resolution, a config bag — to produce a URL,
//! which cost about as much as the SigV4 signature itself (callgrind, release build:
//! ~290 k instructions per URL, ~160 k of them signing). Here the request is signed with
//! the settings the SDK uses for S3 presigning: query-string signature, single
//! percent-encoding, no path normalisation, `UNSIGNED-PAYLOAD`, and `Content-Type`,
//! `Content-Length` and `Host` signed, so the store refuses another type or length. The URL
//! is the SDK's, byte for byte (see the tests).
//!
//! Two ways to the same signature:
//!
//! - **the usual one** ([`PutPresigner::presign_put`]): the canonical request of this one
//!   fixed shape is written straight into a reused buffer, hashed with `sha2`, and signed
//!   with `aws-sigv4`'s own [`v4::calculate_signature`] under the day's signing key, which
//!   is derived once per UTC day ([`v4::generate_signing_key`]) and kept. `aws-sigv4`'s
//!   `sign` derives it anew on every call (four HMACs, about a third of its cost) and
//!   builds the canonical request through header maps and sorted parameter vectors;
//! - **the general one**: `aws-sigv4`'s `sign`, for the inputs the usual one does not
//!   cover (a content type SigV4 would normalise — leading, trailing or repeated spaces,
//!   tabs, non-ASCII — or an endpoint URL that is not plain `scheme://host[:port][/path]`).
//!
//! No cryptography is done here beyond calling those two functions and SHA-256.
//!
//! Virtual-hosted buckets keep the SDK's presigner ([`super::store::BlobStore`]), whose
//! endpoint rules decide the host name.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::Credentials;
use aws_sigv4::http_request::{
    PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

use super::BlobError;
use super::store::PresignedRequest;
use crate::config::S3Config;

/// What an object key keeps unencoded in a URL path: unreserved characters and `/`.
const KEY_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Signs presigned `PUT` URLs for one path-style bucket.
#[derive(Clone)]
pub struct PutPresigner {
    identity: Identity,
    secret_key: Arc<str>,
    region: String,
    /// `<endpoint>/<bucket>/`, to which the encoded key is appended.
    bucket_url: String,
    /// What the usual way needs; `None` when the endpoint URL is not plain.
    plain: Option<Arc<PlainUrl>>,
    /// The day's signing key, shared by every clone.
    day_key: Arc<Mutex<Option<DayKey>>>,
}

/// The parts of a plain endpoint URL that go into the canonical request, and the
/// credential's fixed parts, percent-encoded once.
#[derive(Debug)]
struct PlainUrl {
    /// The `Host` header value (the port left out when it is the scheme's default).
    host: String,
    /// The path of `bucket_url`, as the canonical request has it (`/<bucket>/`).
    path: String,
    /// The access key id, encoded for the query.
    access_key_query: String,
    /// `/<region>/s3/aws4_request` (string to sign) and its query encoding.
    scope_tail: String,
    scope_tail_query: String,
}

/// A signing key and the UTC day (`YYYYMMDD`) it signs for.
#[derive(Clone, Copy)]
struct DayKey {
    day: [u8; 8],
    key: [u8; 32],
}

impl std::fmt::Debug for PutPresigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutPresigner")
            .field("bucket_url", &self.bucket_url)
            .finish_non_exhaustive()
    }
}

const SIGNED_HEADERS: &str = "content-length;content-type;host";
const SIGNED_HEADERS_QUERY: &str = "content-length%3Bcontent-type%3Bhost";
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The payload hash of a presigned S3 URL (the body is not known when signing).
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

impl PutPresigner {
    /// A presigner for `cfg`'s bucket, or `None` when the bucket is addressed
    /// virtual-hosted style (the SDK's presigner is used then).
    pub fn new(cfg: &S3Config) -> Option<Self> {
        if !cfg.force_path_style {
            return None;
        }
        let credentials = Credentials::new(
            cfg.access_key.clone(),
            cfg.secret_key.clone(),
            None,
            None,
            "vibe-dataplane-settings",
        );
        let endpoint = cfg.endpoint.as_str().trim_end_matches('/');
        let bucket = utf8_percent_encode(&cfg.bucket, KEY_PATH);
        let bucket_url = format!("{endpoint}/{bucket}/");
        let plain = plain_url(&bucket_url, cfg).map(Arc::new);
        Some(Self {
            identity: credentials.into(),
            secret_key: cfg.secret_key.as_str().into(),
            region: cfg.region.clone(),
            bucket_url,
            plain,
            day_key: Arc::new(Mutex::new(None)),
        })
    }

    /// A `PUT` of `key` valid from `now` for `ttl`, binding `content_type` and
    /// `content_length`.
    pub fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        content_length: u64,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<PresignedRequest, BlobError> {
        match &self.plain {
            Some(plain) if plain_header_value(content_type) => {
                self.presign_plain(plain, key, content_type, content_length, ttl, now)
            }
            _ => self.presign_general(key, content_type, content_length, ttl, now),
        }
    }

    /// The usual way: the canonical request written directly, the day's key reused.
    fn presign_plain(
        &self,
        plain: &PlainUrl,
        key: &str,
        content_type: &str,
        content_length: u64,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<PresignedRequest, BlobError> {
        let stamp = Stamp::of(now)?;
        let date_time = stamp.date_time();
        let day = &date_time[..8];
        let expires = ttl.as_secs();
        let length_text = itoa_u64(content_length);
        let length = length_text.as_str();

        // The query parameters, already in SigV4's order (sorted by encoded name), without
        // the signature; both the canonical request and the URL use them.
        let mut query = String::with_capacity(320);
        query.push_str("X-Amz-Algorithm=");
        query.push_str(ALGORITHM);
        query.push_str("&X-Amz-Credential=");
        query.push_str(&plain.access_key_query);
        query.push_str("%2F");
        query.push_str(day);
        query.push_str(&plain.scope_tail_query);
        query.push_str("&X-Amz-Date=");
        query.push_str(date_time);
        query.push_str("&X-Amz-Expires=");
        query.push_str(itoa_u64(expires).as_str());
        query.push_str("&X-Amz-SignedHeaders=");
        query.push_str(SIGNED_HEADERS_QUERY);

        let mut creq = Sha256::new();
        creq.update(b"PUT\n");
        creq.update(plain.path.as_bytes());
        for piece in utf8_percent_encode(key, KEY_PATH) {
            creq.update(piece.as_bytes());
        }
        creq.update(b"\n");
        creq.update(query.as_bytes());
        creq.update(b"&x-id=PutObject\ncontent-length:");
        creq.update(length.as_bytes());
        creq.update(b"\ncontent-type:");
        creq.update(content_type.as_bytes());
        creq.update(b"\nhost:");
        creq.update(plain.host.as_bytes());
        creq.update(b"\n\n");
        creq.update(SIGNED_HEADERS.as_bytes());
        creq.update(b"\n");
        creq.update(UNSIGNED_PAYLOAD.as_bytes());
        let creq_hash = creq.finalize();

        let mut string_to_sign = [0u8; 256];
        let mut sts = Writer::new(&mut string_to_sign);
        sts.push(ALGORITHM);
        sts.push("\n");
        sts.push(date_time);
        sts.push("\n");
        sts.push(day);
        let string_to_sign = match sts.push(&plain.scope_tail) {
            true => {
                let mut hex = [0u8; 64];
                hex::encode_to_slice(creq_hash, &mut hex).expect("64 hex digits");
                sts.push("\n");
                sts.push_bytes(&hex);
                sts.written()
            }
            false => return self.presign_general(key, content_type, content_length, ttl, now),
        };
        let day_key = self.day_key(day.as_bytes().try_into().expect("8 digits"), now);
        let signature = v4::calculate_signature(day_key, string_to_sign);

        let mut url =
            String::with_capacity(self.bucket_url.len() + key.len() * 3 + query.len() + 120);
        url.push_str(&self.bucket_url);
        url.extend(utf8_percent_encode(key, KEY_PATH));
        url.push_str("?x-id=PutObject&");
        url.push_str(&query);
        url.push_str("&X-Amz-Signature=");
        url.push_str(&signature);
        Ok(PresignedRequest {
            url,
            headers: vec![
                ("content-length".to_owned(), length.to_owned()),
                ("content-type".to_owned(), content_type.to_owned()),
            ],
            expires_at: now + ttl,
        })
    }

    /// The signing key for `day` (`YYYYMMDD` of `now`), derived on the first use of a day.
    fn day_key(&self, day: [u8; 8], now: SystemTime) -> [u8; 32] {
        let mut cached = self
            .day_key
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(k) = cached.as_ref().filter(|k| k.day == day) {
            return k.key;
        }
        let derived = v4::generate_signing_key(&self.secret_key, now, &self.region, "s3");
        let mut key = [0u8; 32];
        key.copy_from_slice(derived.as_ref());
        *cached = Some(DayKey { day, key });
        key
    }

    /// The general way: `aws-sigv4`'s `sign`.
    fn presign_general(
        &self,
        key: &str,
        content_type: &str,
        content_length: u64,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<PresignedRequest, BlobError> {
        let failed = |e: &dyn std::fmt::Display| BlobError::Storage(format!("presigning: {e}"));
        let mut url = String::with_capacity(self.bucket_url.len() + key.len() + 320);
        url.push_str(&self.bucket_url);
        url.extend(utf8_percent_encode(key, KEY_PATH));
        url.push_str("?x-id=PutObject");
        let length = content_length.to_string();
        let headers = [
            ("content-type", content_type),
            ("content-length", length.as_str()),
        ];
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(ttl);
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("s3")
            .time(now)
            .settings(settings)
            .build()
            .map_err(|e| failed(&e))?
            .into();
        let request = SignableRequest::new(
            "PUT",
            url.as_str(),
            headers.iter().copied(),
            SignableBody::UnsignedPayload,
        )
        .map_err(|e| failed(&e))?;
        let (instructions, _signature) =
            sign(request, &params).map_err(|e| failed(&e))?.into_parts();
        for (name, value) in instructions.params() {
            url.push('&');
            url.push_str(name);
            url.push('=');
            url.extend(utf8_percent_encode(value, QUERY_VALUE));
        }
        Ok(PresignedRequest {
            url,
            headers: headers
                .iter()
                .rev()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            expires_at: now + ttl,
        })
    }
}

/// The usual way's view of `bucket_url`, when it is plain: `http(s)://authority/path`
/// with no user info, query or fragment, and a region that needs no encoding thought.
fn plain_url(bucket_url: &str, cfg: &S3Config) -> Option<PlainUrl> {
    let uri: http::Uri = bucket_url.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?;
    if uri.query().is_some() || authority.as_str().contains('@') {
        return None;
    }
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let host = match authority.port_u16() {
        Some(port) if port != default_port => authority.as_str().to_owned(),
        _ => authority.host().to_owned(),
    };
    // The URL must be exactly scheme://authority + path, as the signer would see it.
    if format!("{scheme}://{}{}", authority.as_str(), uri.path()) != bucket_url {
        return None;
    }
    let region = &cfg.region;
    if !plain_header_value(region) || !plain_header_value(&cfg.access_key) {
        return None;
    }
    Some(PlainUrl {
        host,
        path: uri.path().to_owned(),
        access_key_query: utf8_percent_encode(&cfg.access_key, QUERY_VALUE).to_string(),
        scope_tail: format!("/{region}/s3/aws4_request"),
        scope_tail_query: format!(
            "%2F{}%2Fs3%2Faws4_request",
            utf8_percent_encode(region, QUERY_VALUE)
        ),
    })
}

/// Whether SigV4 takes `value` as it is: printable ASCII, no leading, trailing or
/// repeated spaces (which it would trim or collapse).
fn plain_header_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.iter().all(|b| (0x20..0x7f).contains(b))
        && bytes[0] != b' '
        && bytes[bytes.len() - 1] != b' '
        && !value.contains("  ")
}

/// `YYYYMMDDTHHMMSSZ` of an instant (UTC, whole seconds), as SigV4 writes it.
struct Stamp([u8; 16]);

impl Stamp {
    fn of(now: SystemTime) -> Result<Self, BlobError> {
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|_| BlobError::Storage("presigning: clock before 1970".into()))?
            .as_secs();
        let at = chrono::DateTime::from_timestamp(secs as i64, 0)
            .filter(|t| (0..=9999).contains(&chrono::Datelike::year(t)))
            .ok_or_else(|| BlobError::Storage("presigning: clock out of range".into()))?;
        use chrono::{Datelike, Timelike};
        let mut out = *b"00000000T000000Z";
        let mut put = |at: usize, width: usize, mut n: u32| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(0, 4, at.year() as u32);
        put(4, 2, at.month());
        put(6, 2, at.day());
        put(9, 2, at.hour());
        put(11, 2, at.minute());
        put(13, 2, at.second());
        Ok(Self(out))
    }

    fn date_time(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII digits")
    }
}

/// Decimal text of a `u64` without allocating.
struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[self.start..]).expect("ASCII digits")
    }
}

fn itoa_u64(mut n: u64) -> Digits {
    let mut buf = [0u8; 20];
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    Digits { buf, start }
}

/// Appends text to a fixed buffer; `push` says whether it fitted.
struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Writer<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0 }
    }

    fn push(&mut self, text: &str) -> bool {
        self.push_bytes(text.as_bytes())
    }

    fn push_bytes(&mut self, bytes: &[u8]) -> bool {
        let Some(room) = self.buf.get_mut(self.len..self.len + bytes.len()) else {
            return false;
        };
        room.copy_from_slice(bytes);
        self.len += bytes.len();
        true
    }

    fn written(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// What a query value keeps unencoded: unreserved characters (SigV4's own encoding).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::presigning::PresigningConfig;

    fn config(path_style: bool) -> S3Config {
        S3Config {
            endpoint: "http://127.0.0.1:9000".parse().unwrap(),
            region: "us-east-1".into(),
            access_key: "AKIDEXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            bucket: "vibe-bucket".into(),
            force_path_style: path_style,
        }
    }

    /// The URL and headers the SDK's presigner makes for the same request and instant.
    async fn sdk_presign(
        cfg: &S3Config,
        key: &str,
        content_type: &str,
        length: u64,
        ttl: Duration,
        at: SystemTime,
    ) -> (String, Vec<(String, String)>) {
        let store = super::super::BlobStore::new(cfg);
        let presigning = PresigningConfig::builder()
            .start_time(at)
            .expires_in(ttl)
            .build()
            .unwrap();
        let presigned = store
            .client
            .put_object()
            .bucket(&cfg.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(length as i64)
            .presigned(presigning)
            .await
            .unwrap();
        let mut headers: Vec<(String, String)> = presigned
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        headers.sort();
        (presigned.uri().to_string(), headers)
    }

    /// Keys, content types, lengths and lifetimes the URLs are checked with: ordinary ones
    /// and ones that need encoding or that SigV4 would normalise (the general way's).
    const CASES: &[(&str, &str, u64, u64)] = &[
        (
            "did:vibe:z6MkkrbXQjbKWi8cdNHKJjR4Etq2UrtwgmtizdfsmSACFUMz/photos/01a23d30-a49f-75e2-b311-b6eb368ddcff-Holiday_pic_1_.JPG",
            "image/jpeg",
            1_234_567,
            300,
        ),
        ("bench/photos/7-a.png", "image/png", 1, 3_600),
        (
            "odd keys/a+b=c&d%e#f?g~h!i'j(k)*l,m;n@o$p[q]",
            "text/plain; charset=utf-8",
            0,
            60,
        ),
        (
            "unicode/ü€😀",
            "application/octet-stream",
            5_000_000_000,
            604_800,
        ),
        // SigV4 trims and collapses spaces in header values: the general way.
        ("spaces/a.txt", "text/plain;  charset=utf-8", 10, 300),
        ("spaces/b.txt", " text/plain ", 10, 300),
        ("tab/c.txt", "text/plain;\tcharset=utf-8", 10, 300),
        ("max/d.bin", "application/octet-stream", i64::MAX as u64, 1),
    ];

    async fn assert_sdk_s_urls(cfg: &S3Config, presigner: &PutPresigner, at: SystemTime) {
        for &(key, content_type, length, ttl) in CASES {
            let ttl = Duration::from_secs(ttl);
            let ours = assert_both_ways_agree(presigner, key, content_type, length, ttl, at);
            let (url, headers) = sdk_presign(cfg, key, content_type, length, ttl, at).await;
            assert_eq!(ours.url, url, "{key}");
            // Sorted by name, as the SDK's once sorted.
            assert_eq!(ours.headers, headers, "{key}");
        }
    }

    /// The usual way and the general way (`aws-sigv4`'s `sign`) give the same URL and
    /// headers, whichever of them `presign_put` takes.
    fn assert_both_ways_agree(
        presigner: &PutPresigner,
        key: &str,
        content_type: &str,
        length: u64,
        ttl: Duration,
        at: SystemTime,
    ) -> PresignedRequest {
        let ours = presigner
            .presign_put(key, content_type, length, ttl, at)
            .unwrap();
        let general = presigner
            .presign_general(key, content_type, length, ttl, at)
            .unwrap();
        assert_eq!(general.url, ours.url, "{key}");
        assert_eq!(general.headers, ours.headers, "{key}");
        assert_eq!(ours.expires_at, at + ttl);
        ours
    }

    #[tokio::test]
    async fn urls_are_the_sdk_presigner_s_byte_for_byte() {
        let cfg = config(true);
        let presigner = PutPresigner::new(&cfg).unwrap();
        assert!(presigner.plain.is_some());
        // Sub-second instants are signed at the whole second, as the SDK does.
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_323_227_456);
        assert_sdk_s_urls(&cfg, &presigner, at).await;
    }

    #[tokio::test]
    async fn the_day_s_key_follows_the_clock_across_midnight() {
        let cfg = config(true);
        let presigner = PutPresigner::new(&cfg).unwrap();
        let midnight = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_342_400);
        // Before, after, and before midnight again (a clock stepped back): each instant
        // gets its own day's key, never the one cached for the other day.
        for at in [
            midnight - Duration::from_secs(1),
            midnight,
            midnight + Duration::from_secs(86_399),
            midnight - Duration::from_secs(3_600),
        ] {
            assert_sdk_s_urls(&cfg, &presigner, at).await;
        }
    }

    #[tokio::test]
    async fn endpoints_with_default_ports_paths_and_odd_names() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_323_227);
        let cfg = |endpoint: &str, region: &str, access_key: &str, bucket: &str| S3Config {
            endpoint: endpoint.parse().unwrap(),
            region: region.into(),
            access_key: access_key.into(),
            bucket: bucket.into(),
            ..config(true)
        };
        for (endpoint, region, access_key, bucket) in [
            (
                "http://127.0.0.1:80",
                "us-east-1",
                "AKIDEXAMPLE",
                "vibe-bucket",
            ),
            ("https://s3.example.test", "eu-central-1", "AKID", "b"),
            ("https://s3.example.test:443/", "eu-central-1", "AKID", "b"),
            ("https://s3.example.test:9443", "r-1", "AK/ID+x", "b.c-d"),
            ("http://localhost:9000", "weird region", "AKID", "bucket"),
        ] {
            let cfg = cfg(endpoint, region, access_key, bucket);
            let presigner = PutPresigner::new(&cfg).unwrap();
            assert_sdk_s_urls(&cfg, &presigner, at).await;
        }
        // An endpoint with a path: the SDK joins it to the bucket without a `/`
        // (`…/prefixbucket/`), which this presigner never did; both ways here agree.
        for endpoint in [
            "https://s3.example.test:9443/prefix/",
            "http://localhost:9000/a%20b",
        ] {
            let presigner = PutPresigner::new(&cfg(endpoint, "r-1", "AKID", "b")).unwrap();
            for &(key, content_type, length, ttl) in CASES {
                let ttl = Duration::from_secs(ttl);
                let url =
                    assert_both_ways_agree(&presigner, key, content_type, length, ttl, at).url;
                assert!(url.starts_with(&format!("{}/b/", endpoint.trim_end_matches('/'))));
            }
        }
    }

    #[test]
    fn virtual_hosted_buckets_keep_the_sdk_presigner() {
        assert!(PutPresigner::new(&config(false)).is_none());
    }
}
