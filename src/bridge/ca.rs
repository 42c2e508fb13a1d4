//! Conclave's own certificate authority, for Bridges without `spec.tls`: one CA per Bridge and
//! a serving certificate for its domain, renewed well before it expires. Pure functions of
//! the stored PEM and the clock, so every decision is unit-tested without a cluster.

use chrono::{DateTime, Duration, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

/// Secret keys of the CA Secret.
pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";
/// Name suffix of the CA Secret; the serving certificate goes to the `tls` Secret that a
/// cert-manager Certificate would also write, so switching modes keeps one name.
pub const CA_SUFFIX: &str = "ca";

/// A CA outlives many serving certificates; it is replaced when less than a year is left.
pub const CA_VALIDITY: Duration = Duration::days(3650);
pub const CA_RENEW_BEFORE: Duration = Duration::days(365);
/// Serving certificates live 90 days and are renewed 30 days before they expire, the same
/// rhythm as public ACME certificates, so a stalled operator has a month to recover.
pub const SERVING_VALIDITY: Duration = Duration::days(90);
pub const SERVING_RENEW_BEFORE: Duration = Duration::days(30);
/// Tolerates clocks of clients slightly behind the operator's.
const BACKDATE: Duration = Duration::minutes(5);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("generating a certificate failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("certificate is not valid PEM/X.509: {0}")]
    Parse(String),
    #[error("time out of range")]
    Time,
}

/// A certificate and its private key, PEM encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// What the operator reads back from a stored certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspected {
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub dns_names: Vec<String>,
}

/// Why a stored certificate must be replaced now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replace {
    Missing,
    Unreadable,
    WrongName,
    NotSignedByCa,
    Expiring,
}

impl Replace {
    pub fn as_str(self) -> &'static str {
        match self {
            Replace::Missing => "missing",
            Replace::Unreadable => "unreadable",
            Replace::WrongName => "issued for another name",
            Replace::NotSignedByCa => "not signed by the current CA",
            Replace::Expiring => "due for renewal",
        }
    }
}

fn to_time(t: DateTime<Utc>) -> Result<time::OffsetDateTime, CaError> {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp()).map_err(|_| CaError::Time)
}

fn from_asn1(t: x509_parser::time::ASN1Time) -> Result<DateTime<Utc>, CaError> {
    DateTime::from_timestamp(t.timestamp(), 0).ok_or(CaError::Time)
}

/// A new self-signed CA named after the Bridge.
pub fn new_ca(namespace: &str, bridge: &str, now: DateTime<Utc>) -> Result<Pem, CaError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Conclave CA {namespace}/{bridge}"));
    params.distinguished_name.push(DnType::OrganizationName, "Conclave");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = to_time(now - BACKDATE)?;
    params.not_after = to_time(now + CA_VALIDITY)?;
    let cert = params.self_signed(&key)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A serving certificate for `names` (the first is the common name), signed by `ca`, with a
/// fresh key.
pub fn issue(ca: &Pem, names: &[&str], now: DateTime<Utc>) -> Result<Pem, CaError> {
    let ca_key = KeyPair::from_pem(&ca.key)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    params
        .distinguished_name
        .push(DnType::CommonName, names.first().copied().unwrap_or_default());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = to_time(now - BACKDATE)?;
    params.not_after = to_time(now + SERVING_VALIDITY)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn der(pem: &str) -> Result<Vec<u8>, CaError> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| CaError::Parse(e.to_string()))?;
    Ok(parsed.contents)
}

/// Validity and DNS names of the first certificate in `pem`.
pub fn inspect(pem: &str) -> Result<Inspected, CaError> {
    let der = der(pem)?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| CaError::Parse(e.to_string()))?;
    let mut dns_names = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                if let GeneralName::DNSName(n) = name {
                    dns_names.push(n.to_string());
                }
            }
        }
    }
    Ok(Inspected {
        not_before: from_asn1(cert.validity().not_before)?,
        not_after: from_asn1(cert.validity().not_after)?,
        dns_names,
    })
}

/// Whether `cert` carries a signature made by `ca`'s key.
fn signed_by(cert: &str, ca: &str) -> Result<bool, CaError> {
    let (cert_der, ca_der) = (der(cert)?, der(ca)?);
    let (_, cert) = X509Certificate::from_der(&cert_der).map_err(|e| CaError::Parse(e.to_string()))?;
    let (_, ca) = X509Certificate::from_der(&ca_der).map_err(|e| CaError::Parse(e.to_string()))?;
    Ok(cert.verify_signature(Some(ca.public_key())).is_ok())
}

/// When a certificate is due: `renew_before` ahead of its end, or a third of its life ahead
/// if that is less (a short-lived certificate would otherwise be due at once).
pub fn renew_at(cert: &Inspected, renew_before: Duration) -> DateTime<Utc> {
    let life = cert.not_after - cert.not_before;
    cert.not_after - renew_before.min(life / 3)
}

/// Whether the stored CA must be replaced; `None` when it is usable.
pub fn check_ca(ca: Option<&Pem>, now: DateTime<Utc>) -> Option<Replace> {
    let Some(ca) = ca else {
        return Some(Replace::Missing);
    };
    if KeyPair::from_pem(&ca.key).is_err() {
        return Some(Replace::Unreadable);
    }
    match inspect(&ca.cert) {
        Err(_) => Some(Replace::Unreadable),
        Ok(c) if now >= renew_at(&c, CA_RENEW_BEFORE) => Some(Replace::Expiring),
        Ok(_) => None,
    }
}

/// Whether the stored serving certificate must be replaced; `None` when it is usable.
/// The certificate must name exactly `names`, in order.
pub fn check_serving(serving: Option<&Pem>, ca: &Pem, names: &[&str], now: DateTime<Utc>) -> Option<Replace> {
    let Some(serving) = serving else {
        return Some(Replace::Missing);
    };
    if KeyPair::from_pem(&serving.key).is_err() {
        return Some(Replace::Unreadable);
    }
    let Ok(info) = inspect(&serving.cert) else {
        return Some(Replace::Unreadable);
    };
    if info.dns_names != names {
        return Some(Replace::WrongName);
    }
    if !signed_by(&serving.cert, &ca.cert).unwrap_or(false) {
        return Some(Replace::NotSignedByCa);
    }
    if now >= renew_at(&info, SERVING_RENEW_BEFORE) {
        return Some(Replace::Expiring);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("timestamp")
    }

    #[test]
    fn issued_certificate_names_the_domain_and_chains_to_the_ca() {
        let now = t("2026-11-26T12:00:00Z");
        let ca = new_ca("ns", "meet", now).expect("ca");
        let leaf = issue(&ca, &["meet.example.com"], now).expect("leaf");
        let info = inspect(&leaf.cert).expect("inspect");
        assert_eq!(info.dns_names, vec!["meet.example.com"]);
        assert_eq!(info.not_after, now + SERVING_VALIDITY);
        assert_eq!(info.not_before, now - BACKDATE);
        assert!(signed_by(&leaf.cert, &ca.cert).expect("verify"));
        assert_eq!(check_serving(Some(&leaf), &ca, &["meet.example.com"], now), None);
        assert_eq!(check_ca(Some(&ca), now), None);
    }

    #[test]
    fn a_certificate_from_another_ca_is_replaced() {
        let now = t("2026-11-26T12:00:00Z");
        let ca = new_ca("ns", "meet", now).expect("ca");
        let other = new_ca("ns", "meet", now).expect("other ca");
        let leaf = issue(&other, &["meet.example.com"], now).expect("leaf");
        assert_eq!(
            check_serving(Some(&leaf), &ca, &["meet.example.com"], now),
            Some(Replace::NotSignedByCa)
        );
    }

    #[test]
    fn renewal_is_due_thirty_days_before_expiry() {
        let now = t("2026-11-26T12:00:00Z");
        let ca = new_ca("ns", "meet", now).expect("ca");
        let leaf = issue(&ca, &["meet.example.com"], now).expect("leaf");
        let due = renew_at(&inspect(&leaf.cert).expect("inspect"), SERVING_RENEW_BEFORE);
        assert_eq!(due, now + SERVING_VALIDITY - SERVING_RENEW_BEFORE);
        let just_before = due - Duration::seconds(1);
        assert_eq!(
            check_serving(Some(&leaf), &ca, &["meet.example.com"], just_before),
            None
        );
        assert_eq!(
            check_serving(Some(&leaf), &ca, &["meet.example.com"], due),
            Some(Replace::Expiring)
        );
    }

    #[test]
    fn wrong_name_missing_and_garbage_are_replaced() {
        let now = t("2026-11-26T12:00:00Z");
        let ca = new_ca("ns", "meet", now).expect("ca");
        let leaf = issue(&ca, &["old.example.com"], now).expect("leaf");
        assert_eq!(
            check_serving(Some(&leaf), &ca, &["meet.example.com"], now),
            Some(Replace::WrongName)
        );
        assert_eq!(
            check_serving(None, &ca, &["meet.example.com"], now),
            Some(Replace::Missing)
        );
        // A TURN name added to (or removed from) the Bridge re-issues the certificate.
        let both = ["meet.example.com", "turn.example.com"];
        let current = issue(&ca, &["meet.example.com"], now).expect("leaf");
        assert_eq!(check_serving(Some(&current), &ca, &both, now), Some(Replace::WrongName));
        let reissued = issue(&ca, &both, now).expect("leaf");
        assert_eq!(inspect(&reissued.cert).expect("inspect").dns_names, both);
        assert_eq!(check_serving(Some(&reissued), &ca, &both, now), None);
        let garbage = Pem {
            cert: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            key: leaf.key.clone(),
        };
        assert_eq!(
            check_serving(Some(&garbage), &ca, &["meet.example.com"], now),
            Some(Replace::Unreadable)
        );
        assert_eq!(check_ca(None, now), Some(Replace::Missing));
    }

    #[test]
    fn the_ca_is_replaced_a_year_before_it_expires() {
        let now = t("2026-11-26T12:00:00Z");
        let ca = new_ca("ns", "meet", now).expect("ca");
        let due = renew_at(&inspect(&ca.cert).expect("inspect"), CA_RENEW_BEFORE);
        assert_eq!(due, now + CA_VALIDITY - CA_RENEW_BEFORE);
        assert_eq!(check_ca(Some(&ca), due), Some(Replace::Expiring));
    }

    #[test]
    fn short_lived_certificates_renew_at_two_thirds() {
        let start = t("2026-01-01T00:00:00Z");
        let info = Inspected {
            not_before: start,
            not_after: start + Duration::days(3),
            dns_names: vec![],
        };
        assert_eq!(renew_at(&info, SERVING_RENEW_BEFORE), start + Duration::days(2));
    }
}
