//! Mutual TLS bound to node keys.
//!
//! Each node presents a self-signed X.509 certificate whose subject key *is* its Ed25519 node
//! key, so the TLS 1.3 CertificateVerify proves possession of that key. A private extension
//! carries the node's claims: its name, its identity generation and, when the network uses
//! certificates, the [`NodeCertificate`] signed by the network key. Both sides run the same
//! [`PeerVerifier`], which applies the [`Admission`] policy; a refused peer never completes
//! the handshake. No web PKI, no CA: trust comes only from the network key or the allowlist.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::identity::{Admission, Admitted, NodeCertificate, PublicKey, Refusal, SecretKey, unix_now};

/// ALPN protocol id; bumped when the wire protocol changes incompatibly.
pub const ALPN: &[u8] = b"shoal/1";
/// ALPN protocol id of agents that also take sealed membership datagrams (`sealed`): offered
/// first, so two such agents agree on it, while one that only knows [`ALPN`] still connects
/// (and is sent membership datagrams over connections only).
pub const ALPN_SEALED: &[u8] = b"shoal/1+sealed";

/// The protocols offered, preferred first.
fn alpn_protocols() -> Vec<Vec<u8>> {
    vec![ALPN_SEALED.to_vec(), ALPN.to_vec()]
}
/// Object identifier of the shoal claims extension (a private arc; only shoal reads it).
const CLAIMS_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59999, 7946, 1];
/// Largest claims extension we accept.
const MAX_CLAIMS_BYTES: usize = 1024;
const ED25519_OID: &str = "1.3.101.112";

/// Errors building TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("generating TLS certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// rustls rejected the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// quinn rejected the rustls configuration.
    #[error("QUIC TLS configuration: {0}")]
    Quic(String),
    /// The claims could not be encoded.
    #[error("encoding certificate claims: {0}")]
    Codec(#[from] codec::CodecError),
}

/// What a node says about itself inside its TLS certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Node name (self-declared; a network certificate's name takes precedence).
    pub name: String,
    /// Identity generation of this run; lets peers drop connections to an earlier run.
    pub generation: u64,
    /// Binary [`NodeCertificate`], when the network uses certificates.
    pub network_cert: Option<Vec<u8>>,
}

/// An authenticated and admitted peer, as learned from its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its node key (proved by the handshake).
    pub key: PublicKey,
    /// Its name: the network certificate's when there is one.
    pub name: String,
    /// Its identity generation.
    pub generation: u64,
    /// How it was admitted.
    pub admitted: Admitted,
    /// End of its network certificate's validity (Unix seconds, inclusive) when it was
    /// admitted by certificate: the connection ends when it passes. `None` for the allowlist.
    pub not_after: Option<u64>,
}

/// Our own TLS certificate and key.
pub struct LocalCert {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl LocalCert {
    /// Builds the self-signed certificate for `secret` carrying `claims`.
    pub fn new(secret: &SecretKey, claims: &Claims) -> Result<LocalCert, TlsError> {
        let key = PrivatePkcs8KeyDer::from(secret.to_pkcs8_der());
        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key, &rcgen::PKCS_ED25519)?;
        let mut params = rcgen::CertificateParams::new(vec!["shoal".to_string()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, claims.name.clone());
        params.custom_extensions.push(rcgen::CustomExtension::from_oid_content(
            CLAIMS_OID,
            der_octet_string(&codec::encode(claims)?),
        ));
        let cert = params.self_signed(&key_pair)?;
        Ok(LocalCert {
            cert: cert.der().clone(),
            key,
        })
    }

    /// The certificate in DER.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.clone()]
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// Reads the node key and claims out of a peer certificate, without judging them.
pub fn parse_peer_cert(der: &[u8]) -> Result<(PublicKey, Claims), Refusal> {
    let malformed = |m: &str| Refusal::Malformed(m.to_string());
    let (rest, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| malformed("not an X.509 certificate"))?;
    if !rest.is_empty() {
        return Err(malformed("trailing bytes after certificate"));
    }
    let spki = cert.public_key();
    if spki.algorithm.algorithm.to_id_string() != ED25519_OID {
        return Err(malformed("certificate key is not Ed25519"));
    }
    let key: [u8; 32] = spki
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| malformed("Ed25519 key is not 32 bytes"))?;
    let oid = CLAIMS_OID.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == oid)
        .ok_or_else(|| malformed("certificate has no shoal claims"))?;
    let inner =
        parse_der_octet_string(ext.value).ok_or_else(|| malformed("claims extension is not an OCTET STRING"))?;
    let claims: Claims =
        codec::decode_exact(inner, MAX_CLAIMS_BYTES).map_err(|e| Refusal::Malformed(format!("claims: {e}")))?;
    Ok((PublicKey(key), claims))
}

/// Parses and admits a peer certificate at time `now`.
pub fn inspect_peer(der: &[u8], admission: &Admission, now: u64) -> Result<PeerInfo, Refusal> {
    let (key, claims) = parse_peer_cert(der)?;
    let network_cert = match &claims.network_cert {
        Some(bytes) => Some(
            NodeCertificate::from_bytes(bytes).map_err(|e| Refusal::Malformed(format!("network certificate: {e}")))?,
        ),
        None => None,
    };
    let admitted = admission.check(&key, network_cert.as_ref(), now)?;
    let (name, not_after) = match &admitted {
        Admitted::Certificate { name } => (name.clone(), network_cert.map(|c| c.not_after)),
        // A name the allowlist binds to this key is its name, whatever it claims.
        Admitted::Allowlist { name: Some(name) } => (name.clone(), None),
        Admitted::Allowlist { name: None } => (claims.name.clone(), None),
    };
    Ok(PeerInfo {
        key,
        name,
        generation: claims.generation,
        admitted,
        not_after,
    })
}

/// Minimal DER OCTET STRING encoding (tag 0x04, definite length).
fn der_octet_string(content: &[u8]) -> Vec<u8> {
    let mut out = vec![0x04];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn parse_der_octet_string(der: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = der.split_first()?;
    if tag != 0x04 {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    (rest.len() == len).then_some(rest)
}

/// Called with every refusal the verifier makes; the transport logs and counts them.
pub type RefusalHook = Arc<dyn Fn(Option<PublicKey>, &Refusal) + Send + Sync>;

/// Certificate verifier for both directions of the handshake.
pub struct PeerVerifier {
    admission: Arc<Admission>,
    provider: Arc<CryptoProvider>,
    /// When set (outgoing dials to a known member), only this key is accepted.
    expected: Option<PublicKey>,
    on_refusal: RefusalHook,
}

impl std::fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerVerifier")
            .field("expected", &self.expected)
            .finish()
    }
}

impl PeerVerifier {
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        let result = if intermediates.is_empty() {
            inspect_peer(end_entity, &self.admission, unix_now()).and_then(|peer| match self.expected {
                Some(expected) if expected != peer.key => Err(Refusal::UnexpectedPeer {
                    expected,
                    actual: peer.key,
                }),
                _ => Ok(()),
            })
        } else {
            Err(Refusal::Malformed("unexpected certificate chain".into()))
        };
        result.map_err(|refusal| {
            let key = parse_peer_cert(end_entity).ok().map(|(k, _)| k);
            (self.on_refusal)(key, &refusal);
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(refusal))))
        })
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Builds the rustls configurations for one node.
pub struct TlsConfigs {
    /// Our certificate; replaced when the node's network certificate is renewed. Configs
    /// built earlier keep the one they were built with.
    local: std::sync::RwLock<Arc<LocalCert>>,
    admission: Arc<Admission>,
    provider: Arc<CryptoProvider>,
    on_refusal: RefusalHook,
}

impl TlsConfigs {
    /// TLS material for a node with certificate `local`, admitting per `admission`.
    pub fn new(local: LocalCert, admission: Arc<Admission>, on_refusal: RefusalHook) -> Self {
        TlsConfigs {
            local: std::sync::RwLock::new(Arc::new(local)),
            admission,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            on_refusal,
        }
    }

    /// Presents `local` on every handshake from now on; returns the previous certificate.
    pub fn set_local(&self, local: Arc<LocalCert>) -> Arc<LocalCert> {
        std::mem::replace(&mut *self.local.write().unwrap_or_else(|e| e.into_inner()), local)
    }

    fn local(&self) -> Arc<LocalCert> {
        self.local.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn verifier(&self, expected: Option<PublicKey>) -> Arc<PeerVerifier> {
        Arc::new(PeerVerifier {
            admission: self.admission.clone(),
            provider: self.provider.clone(),
            expected,
            on_refusal: self.on_refusal.clone(),
        })
    }

    /// Server side: requires and verifies a client certificate.
    pub fn server(&self) -> Result<quinn::crypto::rustls::QuicServerConfig, TlsError> {
        let local = self.local();
        let mut cfg = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(self.verifier(None))
            .with_single_cert(local.chain(), local.private_key())?;
        cfg.alpn_protocols = alpn_protocols();
        // No session resumption (see `client`): no tickets to send, no sessions to keep.
        cfg.send_tls13_tickets = 0;
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        quinn::crypto::rustls::QuicServerConfig::try_from(cfg).map_err(|e| TlsError::Quic(e.to_string()))
    }

    /// Client side: presents our certificate; accepts only `expected` when given.
    pub fn client(&self, expected: Option<PublicKey>) -> Result<quinn::crypto::rustls::QuicClientConfig, TlsError> {
        let local = self.local();
        let mut cfg = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(self.verifier(expected))
            .with_client_auth_cert(local.chain(), local.private_key())?;
        cfg.alpn_protocols = alpn_protocols();
        // Every connection is a full handshake, so admission (certificate, expiry, network
        // key) is checked each time, never skipped by a resumed session. A config is built per
        // connection, so a ticket cache here would never be hit anyway, yet rustls's default
        // one holds about 14 KB for as long as the connection lives: 0.7 MB at 50 peers.
        cfg.resumption = rustls::client::Resumption::disabled();
        quinn::crypto::rustls::QuicClientConfig::try_from(cfg).map_err(|e| TlsError::Quic(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_carries_key_and_claims() {
        let secret = SecretKey::generate();
        let claims = Claims {
            name: "n1".into(),
            generation: 42,
            network_cert: None,
        };
        let local = LocalCert::new(&secret, &claims).unwrap();
        let (key, back) = parse_peer_cert(&local.cert).unwrap();
        assert_eq!(key, secret.public());
        assert_eq!(back, claims);
        let allow = Admission::new(None, [secret.public()]);
        let peer = inspect_peer(&local.cert, &allow, unix_now()).unwrap();
        assert_eq!(peer.name, "n1");
        assert_eq!(peer.generation, 42);
        assert!(inspect_peer(&local.cert, &Admission::new(None, []), unix_now()).is_err());
    }

    #[test]
    fn network_certificate_name_wins() {
        let net = SecretKey::generate();
        let secret = SecretKey::generate();
        let nc = NodeCertificate::issue(&net, secret.public(), "vouched", 0, u64::MAX).unwrap();
        let claims = Claims {
            name: "claimed".into(),
            generation: 1,
            network_cert: Some(nc.to_bytes()),
        };
        let local = LocalCert::new(&secret, &claims).unwrap();
        let peer = inspect_peer(&local.cert, &Admission::new(Some(net.public()), []), unix_now()).unwrap();
        assert_eq!(peer.name, "vouched");
        assert_eq!(
            peer.not_after,
            Some(u64::MAX),
            "the connection ends with the certificate"
        );
        let allow = Admission::new(None, [secret.public()]);
        assert_eq!(inspect_peer(&local.cert, &allow, unix_now()).unwrap().not_after, None);
    }

    #[test]
    fn garbage_certificates_are_refused_not_panicked_on() {
        for bad in [&b""[..], b"\x30\x03\x02\x01\x00", &[0xffu8; 300][..]] {
            assert!(matches!(parse_peer_cert(bad), Err(Refusal::Malformed(_))));
        }
    }

    #[test]
    fn der_octet_string_roundtrip() {
        for n in [0usize, 1, 127, 128, 255, 256, 1000] {
            let v = vec![7u8; n];
            assert_eq!(parse_der_octet_string(&der_octet_string(&v)), Some(&v[..]));
        }
        assert_eq!(parse_der_octet_string(&[0x04, 0x02, 1]), None);
    }
}
