//! TLS settings as Prometheus' users write them, turned into rustls configurations: the
//! server side of exporter-toolkit's `tls_server_config` and the client side of Prometheus'
//! `tls_config`. Go's names (cipher suites, curves, client auth types, versions) are mapped to
//! what rustls offers; a name Go knows and rustls lacks is refused with that said, never dropped.

use crate::config::{TlsConfig, TlsServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

/// Go's TLS 1.2 suites that rustls offers, by Go's names.
const TLS12_SUITES: [(&str, rustls::SupportedCipherSuite); 6] = [
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// Go's TLS 1.3 suite names: Go always enables all three whatever `cipher_suites` says, and so
/// does torchwatch, so naming them is accepted and changes nothing, as in Go.
const TLS13_SUITE_NAMES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// Suites Go's `tls.CipherSuites()` lists that rustls does not implement (CBC and RSA key
/// exchange), so a file naming one gets a reason rather than "unknown".
const GO_ONLY_SUITES: [&str; 8] = [
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
];

fn provider(
    cipher_suites: &[String],
    curves: &[String],
    field: &str,
) -> Result<CryptoProvider, String> {
    let mut provider = ring::default_provider();
    if !cipher_suites.is_empty() {
        let mut chosen: Vec<rustls::SupportedCipherSuite> = provider
            .cipher_suites
            .iter()
            .copied()
            .filter(|s| s.tls13().is_some())
            .collect();
        for name in cipher_suites {
            if let Some((_, suite)) = TLS12_SUITES.iter().find(|(n, _)| n == name) {
                chosen.push(*suite);
            } else if GO_ONLY_SUITES.contains(&name.as_str()) {
                return Err(format!(
                    "{field}.cipher_suites: {name} is a Go cipher suite torchwatch's TLS library \
                     (rustls) does not implement; it offers {}",
                    TLS12_SUITES.map(|(n, _)| n).join(", ")
                ));
            } else if !TLS13_SUITE_NAMES.contains(&name.as_str()) {
                return Err(format!("{field}.cipher_suites: unknown cipher: {name}"));
            }
        }
        provider.cipher_suites = chosen;
    }
    if !curves.is_empty() {
        provider.kx_groups = curves
            .iter()
            .map(|name| match name.as_str() {
                "X25519" => Ok(ring::kx_group::X25519),
                "CurveP256" => Ok(ring::kx_group::SECP256R1),
                "CurveP384" => Ok(ring::kx_group::SECP384R1),
                "CurveP521" => Err(format!(
                    "{field}.curve_preferences: CurveP521 is not offered by torchwatch's TLS \
                     library (rustls); use X25519, CurveP256 or CurveP384"
                )),
                other => Err(format!("{field}.curve_preferences: unknown curve: {other}")),
            })
            .collect::<Result<_, _>>()?;
    }
    Ok(provider)
}

fn version(
    text: Option<&str>,
    default: &'static rustls::SupportedProtocolVersion,
    field: &str,
) -> Result<&'static rustls::SupportedProtocolVersion, String> {
    match text {
        None => Ok(default),
        Some("TLS12") => Ok(&rustls::version::TLS12),
        Some("TLS13") => Ok(&rustls::version::TLS13),
        Some(v @ ("TLS10" | "TLS11")) => Err(format!(
            "{field}: {v} is not offered by torchwatch's TLS library (rustls), which speaks TLS \
             1.2 and 1.3 only; use TLS12"
        )),
        Some(other) => Err(format!("{field}: unknown TLS version: {other}")),
    }
}

fn versions(
    min: Option<&str>,
    max: Option<&str>,
    field: &str,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let min = version(
        min,
        &rustls::version::TLS12,
        &format!("{field}.min_version"),
    )?;
    let max = version(
        max,
        &rustls::version::TLS13,
        &format!("{field}.max_version"),
    )?;
    let order = |v: &rustls::SupportedProtocolVersion| u16::from(v.version);
    if order(min) > order(max) {
        return Err(format!(
            "{field}: min_version is newer than max_version; no version is left"
        ));
    }
    Ok([&rustls::version::TLS12, &rustls::version::TLS13]
        .into_iter()
        .filter(|v| order(v) >= order(min) && order(v) <= order(max))
        .collect())
}

fn read(path: &Path, field: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{field}: cannot read {}: {e}", path.display()))
}

fn certificates(pem: &[u8], field: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{field}: not PEM certificates: {e}"))?;
    if certificates.is_empty() {
        return Err(format!("{field}: no PEM certificate in it"));
    }
    Ok(certificates)
}

/// Never says what the key holds, only that it is unusable.
fn private_key(pem: &[u8], field: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| {
        format!("{field}: no PEM private key (PKCS#8, PKCS#1 or SEC1) could be read from it")
    })
}

fn root_store(
    certificates: Vec<CertificateDer<'static>>,
    field: &str,
) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|e| format!("{field}: not a usable CA certificate: {e}"))?;
    }
    Ok(roots)
}

/// The server side of `tls_server_config`; files are read now, so a changed certificate needs
/// a new configuration (the web config watcher builds one).
pub fn server_config(tls: &TlsServerConfig) -> Result<rustls::ServerConfig, String> {
    const FIELD: &str = "tls_server_config";
    let provider = Arc::new(provider(&tls.cipher_suites, &tls.curve_preferences, FIELD)?);
    let (cert_pem, cert_field) = match (&tls.cert_file, &tls.cert) {
        (Some(path), _) => (
            read(path, "tls_server_config.cert_file")?,
            "tls_server_config.cert_file",
        ),
        (None, Some(text)) => (text.clone().into_bytes(), "tls_server_config.cert"),
        (None, None) => return Err(format!("{FIELD}: missing one of cert or cert_file")),
    };
    let (key_pem, key_field) = match (&tls.key_file, &tls.key) {
        (Some(path), _) => (
            read(path, "tls_server_config.key_file")?,
            "tls_server_config.key_file",
        ),
        (None, Some(text)) => (text.expose().as_bytes().to_vec(), "tls_server_config.key"),
        (None, None) => return Err(format!("{FIELD}: missing one of key or key_file")),
    };
    let chain = certificates(&cert_pem, cert_field)?;
    let key = private_key(&key_pem, key_field)?;
    let client_cas = match (&tls.client_ca_file, &tls.client_ca) {
        (Some(path), _) => Some(certificates(
            &read(path, "tls_server_config.client_ca_file")?,
            "tls_server_config.client_ca_file",
        )?),
        (None, Some(text)) => Some(certificates(
            text.as_bytes(),
            "tls_server_config.client_ca",
        )?),
        (None, None) => None,
    };
    if tls.client_allowed_sans.is_some() {
        return Err(format!(
            "{FIELD}.client_allowed_sans: not supported by torchwatch yet; restrict clients with \
             client_ca_file (a CA that signs only the allowed clients)"
        ));
    }
    let verifier = client_verifier(
        tls.client_auth_type.as_deref().unwrap_or("NoClientCert"),
        client_cas,
        &provider,
    )?;
    let versions = versions(
        tls.min_version.as_deref(),
        tls.max_version.as_deref(),
        FIELD,
    )?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| format!("{FIELD}: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("{FIELD}: the certificate and key do not make a pair: {e}"))?;
    // Go's default is the server's order; the client's only when asked.
    config.ignore_client_order = tls.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn client_verifier(
    kind: &str,
    client_cas: Option<Vec<CertificateDer<'static>>>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    const FIELD: &str = "tls_server_config.client_auth_type";
    let hints = || -> Result<Vec<DistinguishedName>, String> {
        Ok(match &client_cas {
            Some(cas) => root_store(cas.clone(), "tls_server_config.client_ca_file")?.subjects(),
            None => Vec::new(),
        })
    };
    let verified = |optional: bool| -> Result<Arc<dyn ClientCertVerifier>, String> {
        let Some(cas) = &client_cas else {
            return Err(format!(
                "{FIELD}: {kind} verifies client certificates: give client_ca_file (or client_ca) \
                 with the CAs that sign them"
            ));
        };
        let roots = Arc::new(root_store(cas.clone(), "tls_server_config.client_ca_file")?);
        let builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
        let builder = if optional {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        builder.build().map_err(|e| format!("{FIELD}: {e}"))
    };
    let unverified = |mandatory: bool| -> Result<Arc<dyn ClientCertVerifier>, String> {
        Ok(Arc::new(Unverified {
            mandatory,
            hints: hints()?,
            algorithms: provider.signature_verification_algorithms,
        }))
    };
    let verifier = match kind {
        "NoClientCert" | "" => {
            if client_cas.is_some() {
                return Err(
                    "tls_server_config: client CA's have been configured without a Client Auth \
                     Policy (set client_auth_type, e.g. RequireAndVerifyClientCert)"
                        .into(),
                );
            }
            WebPkiClientVerifier::no_client_auth()
        }
        "RequestClientCert" => unverified(false)?,
        "RequireAnyClientCert" | "RequireClientCert" => unverified(true)?,
        "VerifyClientCertIfGiven" => verified(true)?,
        "RequireAndVerifyClientCert" => verified(false)?,
        other => {
            return Err(format!(
                "{FIELD}: invalid ClientAuth: {other} (one of NoClientCert, RequestClientCert, \
                 RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
            ));
        }
    };
    Ok(verifier)
}

/// The client side of Prometheus' `tls_config`; `what` names the field in errors.
pub fn client_config(tls: &TlsConfig, what: &str) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(ring::default_provider());
    let versions = versions(tls.min_version.as_deref(), tls.max_version.as_deref(), what)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("{what}: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = if tls.insecure_skip_verify {
        Arc::new(Unverified {
            mandatory: true,
            hints: Vec::new(),
            algorithms: provider.signature_verification_algorithms,
        })
    } else if let Some(path) = &tls.ca_file {
        // Prometheus trusts only the given CAs when ca_file is set.
        let field = format!("{what}.ca_file");
        let roots = root_store(certificates(&read(path, &field)?, &field)?, &field)?;
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| format!("{field}: {e}"))?
    } else {
        Arc::new(
            rustls_platform_verifier::Verifier::new(provider.clone())
                .map_err(|e| format!("{what}: cannot load the system's CA certificates: {e}"))?,
        )
    };
    let verifier = match &tls.server_name {
        Some(name) => Arc::new(NamedServer {
            name: ServerName::try_from(name.clone())
                .map_err(|e| format!("{what}.server_name: {name:?}: {e}"))?,
            inner: verifier,
        }),
        None => verifier,
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let cert_field = format!("{what}.cert_file");
            let key_field = format!("{what}.key_file");
            let chain = certificates(&read(cert, &cert_field)?, &cert_field)?;
            let key = private_key(&read(key, &key_field)?, &key_field)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("{what}: cert_file and key_file do not make a pair: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(format!("{what}: give cert_file and key_file together")),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Takes any certificate without checking who signed it, still checking that the peer holds
/// its key: Go's RequestClientCert / RequireAnyClientCert, and `insecure_skip_verify`.
#[derive(Debug)]
struct Unverified {
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for Unverified {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Checks the server's certificate against `server_name` instead of the URL's host, as
/// Prometheus' `tls_config.server_name` does.
#[derive(Debug)]
struct NamedServer {
    name: ServerName<'static>,
    inner: Arc<dyn ServerCertVerifier>,
}

impl ServerCertVerifier for NamedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
