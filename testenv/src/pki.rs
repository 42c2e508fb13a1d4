//! In-process PKI: one CA that signs the API server's serving certificate and every
//! client certificate, plus the service-account token signing key.
//!
//! Keys are ECDSA P-256 (rcgen's default): fast to generate, accepted by the API server
//! for TLS, client auth and service-account tokens (ES256).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::Error;

fn cert_err(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |source| Error::Cert {
        what: what.to_string(),
        source,
    }
}

/// A PEM certificate with its PEM (PKCS#8) private key.
pub(crate) struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster CA. Kept for the whole life of the control plane so tests can mint client
/// certificates for arbitrary identities (`client_as`).
pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pair: Pair,
}

impl Ca {
    pub fn new() -> Result<Ca, Error> {
        let key = KeyPair::generate().map_err(cert_err("CA key"))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err("CA"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "conclave-testenv-ca");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(cert_err("CA"))?;
        let pair = Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(Ca {
            issuer: Issuer::new(params, key),
            pair,
        })
    }

    /// The API server's serving certificate, valid for loopback and the in-cluster names.
    pub fn serving(&self) -> Result<Pair, Error> {
        let sans = [
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .map(String::from)
        .to_vec();
        let mut params = CertificateParams::new(sans).map_err(cert_err("serving cert"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kube-apiserver");
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, "serving cert")
    }

    /// A client certificate: the API server maps CN to the user name and each O to a group.
    pub fn client(&self, user: &str, groups: &[&str]) -> Result<Pair, Error> {
        let what = format!("client cert for {user}");
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err(&what))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, user);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().map_err(cert_err(&what))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_err(&what))?;
        // rcgen keeps at most one attribute per type in a distinguished name, but Kubernetes
        // reads every O attribute as a group. So the subject is re-encoded with all groups
        // and the certificate re-signed with the CA key (see `der`).
        let der = der::with_subject(cert.der(), &der::name(user, groups), self.issuer.key())
            .map_err(|e| Error::Other(format!("{what}: {e}")))?;
        Ok(Pair {
            cert_pem: der::pem("CERTIFICATE", &der),
            key_pem: key.serialize_pem(),
        })
    }

    fn sign(&self, params: CertificateParams, what: &str) -> Result<Pair, Error> {
        let key = KeyPair::generate().map_err(cert_err(what))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_err(what))?;
        Ok(Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The service-account token signing key: (private key PEM, public key PEM). The API server
/// verifies with the public half; it does not read PKCS#8 private keys as public keys.
pub(crate) fn service_account_key() -> Result<(String, String), Error> {
    let key = KeyPair::generate().map_err(cert_err("service-account key"))?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

/// Standard base64 with padding (for PEM and kubeconfig `*-data` fields).
pub(crate) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Just enough DER to swap the subject of a certificate that rcgen produced.
mod der {
    use rcgen::SigningKey;

    /// Encodes one TLV with a definite length.
    pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }

    /// Splits `input` into its top-level TLVs (each returned with its header).
    fn split(mut input: &[u8]) -> Result<Vec<&[u8]>, String> {
        let mut out = Vec::new();
        while !input.is_empty() {
            let (hdr, len) = match input.get(1) {
                Some(&b) if b < 0x80 => (2, b as usize),
                Some(&b) => {
                    let n = (b & 0x7f) as usize;
                    let bytes = input.get(2..2 + n).ok_or("truncated DER length")?;
                    (2 + n, bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize))
                }
                None => return Err("truncated DER header".into()),
            };
            let end = hdr + len;
            out.push(input.get(..end).ok_or("truncated DER value")?);
            input = &input[end..];
        }
        Ok(out)
    }

    /// The content of a single TLV that must carry `tag`.
    fn content(tlv: &[u8], tag: u8) -> Result<&[u8], String> {
        if tlv.first() != Some(&tag) {
            return Err(format!("expected DER tag {tag:#x}"));
        }
        let hdr = match tlv.get(1) {
            Some(&b) if b < 0x80 => 2,
            Some(&b) => 2 + (b & 0x7f) as usize,
            None => return Err("truncated DER".into()),
        };
        tlv.get(hdr..).ok_or_else(|| "truncated DER".into())
    }

    /// `CN=<user>, O=<group>...` as a DER Name (one RDN per attribute, UTF8String values).
    pub fn name(user: &str, groups: &[&str]) -> Vec<u8> {
        const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
        const OID_O: &[u8] = &[0x55, 0x04, 0x0a];
        let rdn = |oid: &[u8], value: &str| {
            let atv = [tlv(0x06, oid), tlv(0x0c, value.as_bytes())].concat();
            tlv(0x31, &tlv(0x30, &atv))
        };
        let mut rdns = Vec::new();
        for g in groups {
            rdns.extend(rdn(OID_O, g));
        }
        rdns.extend(rdn(OID_CN, user));
        tlv(0x30, &rdns)
    }

    /// Replaces the subject (6th field of TBSCertificate: version, serial, signature
    /// algorithm, issuer, validity, subject) and re-signs with `key`, whose algorithm is
    /// the one rcgen already recorded in the certificate.
    pub fn with_subject(cert: &[u8], subject: &[u8], key: &impl SigningKey) -> Result<Vec<u8>, String> {
        let top = split(content(cert, 0x30)?)?;
        let [tbs, sig_alg, _sig] = top[..] else {
            return Err("unexpected certificate structure".into());
        };
        let mut fields = split(content(tbs, 0x30)?)?;
        if fields.len() < 7 || fields[5].first() != Some(&0x30) {
            return Err("unexpected TBSCertificate structure".into());
        }
        fields[5] = subject;
        let tbs = tlv(0x30, &fields.concat());
        let sig = key.sign(&tbs).map_err(|e| e.to_string())?;
        let bits = [&[0u8][..], &sig].concat();
        Ok(tlv(0x30, &[tbs, sig_alg.to_vec(), tlv(0x03, &bits)].concat()))
    }

    /// PEM armour (base64, 64 columns).
    pub fn pem(label: &str, der: &[u8]) -> String {
        let b64 = super::base64(der);
        let mut out = format!("-----BEGIN {label}-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "base64({input:?})");
        }
    }

    #[test]
    fn pem_matches_rcgen() {
        let ca = Ca::new().unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["x".to_string()])
            .unwrap()
            .signed_by(&key, &ca.issuer)
            .unwrap();
        assert_eq!(der::pem("CERTIFICATE", cert.der()), cert.pem().replace("\r\n", "\n"));
    }
}
