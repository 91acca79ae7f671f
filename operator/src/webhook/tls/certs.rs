//! The webhook's own PKI: a self-made CA and the serving certificate it signs (rcgen), and the
//! pure decision of when to renew which.
//!
//! Lifetimes (defaults of [`CertPolicy`]): the CA lives 10 years and is replaced one year before
//! it expires; the serving certificate lives 90 days and is replaced 30 days before it expires,
//! so a stuck renewal has a month to be noticed before any `kubectl apply` breaks. When the CA is
//! replaced the previous CA stays in the trusted bundle until it expires, so serving certificates
//! of both generations verify during the hand-over.

use chrono::{DateTime, Duration, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;

/// Why certificate material could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen failed to generate a key or certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM document is not a certificate or key.
    #[error("invalid {0} PEM")]
    Pem(&'static str),
    /// rustls refused the key.
    #[error("the serving key cannot be used: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Lifetimes and renewal margins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertPolicy {
    /// Validity of a new CA.
    pub ca_validity: Duration,
    /// Replace the CA when less than this remains.
    pub ca_renew_before: Duration,
    /// Validity of a new serving certificate.
    pub serving_validity: Duration,
    /// Replace the serving certificate when less than this remains.
    pub serving_renew_before: Duration,
}

impl Default for CertPolicy {
    fn default() -> Self {
        Self {
            ca_validity: Duration::days(3650),
            ca_renew_before: Duration::days(365),
            serving_validity: Duration::days(90),
            serving_renew_before: Duration::days(30),
        }
    }
}

/// The PEM documents kept in the webhook Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    /// The current CA certificate.
    pub ca_cert: String,
    /// The current CA's private key (PKCS#8).
    pub ca_key: String,
    /// Every CA a client should trust: the current one, then a previous one still valid.
    pub ca_bundle: String,
    /// The serving certificate.
    pub serving_cert: String,
    /// The serving certificate's private key (PKCS#8).
    pub serving_key: String,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_not_after", &not_after(&self.ca_cert).ok())
            .field("serving_not_after", &not_after(&self.serving_cert).ok())
            .finish_non_exhaustive()
    }
}

/// What to do with the material found in the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// It is good for a while.
    Keep,
    /// Make a new CA (and a serving certificate under it). The reason is for logs and Events.
    NewCa(String),
    /// Keep the CA, make a new serving certificate.
    NewServingCert(String),
}

/// The DNS names of the webhook Service, as the API server dials it.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Decides whether `existing` can stay, needs a serving certificate, or a new CA.
pub fn plan(
    existing: Option<&TlsMaterial>,
    dns_names: &[String],
    now: DateTime<Utc>,
    policy: &CertPolicy,
) -> Plan {
    let Some(existing) = existing else {
        return Plan::NewCa("no certificate yet".into());
    };
    let ca = match Parsed::of(&existing.ca_cert) {
        Some(ca) if KeyPair::from_pem(&existing.ca_key).is_ok() => ca,
        _ => return Plan::NewCa("the stored CA is unreadable".into()),
    };
    if ca.not_after - now < policy.ca_renew_before {
        return Plan::NewCa(format!("the CA expires at {}", ca.not_after.to_rfc3339()));
    }
    let Some(serving) = Parsed::of(&existing.serving_cert) else {
        return Plan::NewServingCert("the stored serving certificate is unreadable".into());
    };
    if KeyPair::from_pem(&existing.serving_key).is_err() {
        return Plan::NewServingCert("the stored serving key is unreadable".into());
    }
    if serving.issuer != ca.subject {
        return Plan::NewServingCert(
            "the serving certificate was not issued by the current CA".into(),
        );
    }
    if serving.not_after - now < policy.serving_renew_before {
        return Plan::NewServingCert(format!(
            "the serving certificate expires at {}",
            serving.not_after.to_rfc3339()
        ));
    }
    if serving.not_before > now + Duration::minutes(5) {
        return Plan::NewServingCert("the serving certificate is not valid yet".into());
    }
    let mut wanted = dns_names.to_vec();
    wanted.sort();
    if serving.dns_names != wanted {
        return Plan::NewServingCert("the service name changed".into());
    }
    Plan::Keep
}

/// Carries out a plan. `Keep` returns the existing material unchanged.
pub fn execute(
    plan: &Plan,
    existing: Option<&TlsMaterial>,
    dns_names: &[String],
    now: DateTime<Utc>,
    policy: &CertPolicy,
) -> Result<TlsMaterial, CertError> {
    match (plan, existing) {
        (Plan::Keep, Some(existing)) => Ok(existing.clone()),
        (Plan::NewServingCert(_), Some(existing)) => {
            let ca_key = KeyPair::from_pem(&existing.ca_key)?;
            let issuer = Issuer::from_ca_cert_pem(&existing.ca_cert, ca_key)?;
            let (serving_cert, serving_key) = serving_cert(&issuer, dns_names, now, policy)?;
            Ok(TlsMaterial {
                serving_cert,
                serving_key,
                ..existing.clone()
            })
        }
        _ => {
            let (ca_cert, ca_key, issuer) = new_ca(now, policy)?;
            let (serving_cert, serving_key) = serving_cert(&issuer, dns_names, now, policy)?;
            let mut ca_bundle = ca_cert.clone();
            if let Some(previous) = existing
                .map(|e| e.ca_cert.as_str())
                .filter(|pem| not_after(pem).is_ok_and(|at| at > now))
            {
                ca_bundle.push_str(previous);
            }
            Ok(TlsMaterial {
                ca_cert,
                ca_key,
                ca_bundle,
                serving_cert,
                serving_key,
            })
        }
    }
}

fn new_ca(
    now: DateTime<Utc>,
    policy: &CertPolicy,
) -> Result<(String, String, Issuer<'static, KeyPair>), CertError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Vibe Cloud");
    // A distinct subject per generation, so a serving certificate names the CA that signed it.
    name.push(
        DnType::CommonName,
        format!("vibe-operator webhook CA {}", now.timestamp()),
    );
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = to_time(now - Duration::minutes(5));
    params.not_after = to_time(now + policy.ca_validity);
    let cert = params.self_signed(&key)?;
    let key_pem = key.serialize_pem();
    Ok((cert.pem(), key_pem, Issuer::new(params, key)))
}

fn serving_cert(
    issuer: &Issuer<'_, KeyPair>,
    dns_names: &[String],
    now: DateTime<Utc>,
    policy: &CertPolicy,
) -> Result<(String, String), CertError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    let mut name = DistinguishedName::new();
    name.push(
        DnType::CommonName,
        dns_names
            .first()
            .cloned()
            .unwrap_or_else(|| "vibe-operator".into()),
    );
    params.distinguished_name = name;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = to_time(now - Duration::minutes(5));
    params.not_after = to_time(now + policy.serving_validity);
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn to_time(at: DateTime<Utc>) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(at.timestamp())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// The expiry of the first certificate in a PEM document.
pub fn not_after(pem: &str) -> Result<DateTime<Utc>, CertError> {
    Parsed::of(pem)
        .map(|p| p.not_after)
        .ok_or(CertError::Pem("certificate"))
}

/// The parts of a certificate the renewal decision needs.
#[derive(Debug)]
struct Parsed {
    subject: Vec<u8>,
    issuer: Vec<u8>,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    dns_names: Vec<String>,
}

impl Parsed {
    fn of(pem: &str) -> Option<Self> {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
        let mut dns_names: Vec<String> = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::DNSName(name) => Some(name.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        dns_names.sort();
        Some(Self {
            subject: cert.subject().as_raw().to_vec(),
            issuer: cert.issuer().as_raw().to_vec(),
            not_before: DateTime::from_timestamp(cert.validity().not_before.timestamp(), 0)?,
            not_after: DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)?,
            dns_names,
        })
    }
}

/// The serving certificate and key in the form rustls serves.
pub fn certified_key(material: &TlsMaterial) -> Result<rustls::sign::CertifiedKey, CertError> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(material.serving_cert.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|_| CertError::Pem("serving certificate"))?;
    if chain.is_empty() {
        return Err(CertError::Pem("serving certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(material.serving_key.as_bytes())
        .map_err(|_| CertError::Pem("serving key"))?;
    Ok(rustls::sign::CertifiedKey::from_der(
        chain,
        key,
        &crypto_provider(),
    )?)
}

/// The crypto provider of every TLS server and client of the admission endpoint.
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}
