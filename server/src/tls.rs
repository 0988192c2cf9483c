//! TLS for the `tls_v1` IDENTIFY upgrade and the HTTPS listener: both use the same
//! certificate, key, client-auth policy and root CA options, as in NSQ.
//! rustls only speaks TLS 1.2 and 1.3, so `--tls-min-version` values below 1.2 mean 1.2.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::options::Options;

pub fn server_config(o: &Options) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = load_certs(&o.tls_cert)?;
    let key = load_key(&o.tls_key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if o.tls_min_version == "tls1.3" {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls: {e}"))?;
    let cfg = match o.tls_client_auth_policy.as_str() {
        "" => builder.with_no_client_auth(),
        // NSQ's `require` (Go's RequireAnyClientCert): a certificate must be presented,
        // but it is not checked against a CA.
        "require" => builder.with_client_cert_verifier(Arc::new(AnyClientCert(provider.clone()))),
        "require-verify" => {
            if o.tls_root_ca_file.is_empty() {
                return Err(
                    "--tls-client-auth-policy=require-verify needs --tls-root-ca-file".into(),
                );
            }
            let mut roots = rustls::RootCertStore::empty();
            for c in load_certs(&o.tls_root_ca_file)? {
                roots.add(c).map_err(|e| format!("tls root ca: {e}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| format!("tls client verifier: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        other => return Err(format!("invalid --tls-client-auth-policy {other:?}")),
    };
    let cfg = cfg
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls certificate/key: {e}"))?;
    Ok(Arc::new(cfg))
}

/// Requires a client certificate without verifying its chain (the handshake signature is
/// still checked, so the client must hold the certificate's key).
#[derive(Debug)]
struct AnyClientCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::server::danger::ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TCP upgrade's configuration with HTTP's ALPN names, for the HTTPS listener.
pub fn https_config(tcp: &Arc<rustls::ServerConfig>) -> Arc<rustls::ServerConfig> {
    let mut cfg = (**tcp).clone();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid certificate in {path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {path}"));
    }
    Ok(certs)
}

fn load_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| format!("invalid key in {path}: {e}"))?
        .ok_or_else(|| format!("no private key in {path}"))
}
