//! TLS identity: the node's ed25519 key *is* its TLS key, sent as an RFC 7250 raw public key.
//!
//! Why raw public keys and not a self-signed certificate: the DID names a key, not a certificate, and a
//! raw public key (a 44-byte SubjectPublicKeyInfo) has exactly one way to be read, so the key checked
//! against the DID is the key that signed the handshake. Both sides present a key (the coordinator
//! requires a client key) and both verify the handshake signature with it; the client also checks the
//! server's key is the DID it dialled. TLS 1.3 only, with the cipher suites, key exchange and signatures
//! of [`super::crypto`].

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::verify_tls13_signature_with_raw_key;
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, Error as TlsError, SignatureScheme};
use zeroize::Zeroizing;

use super::crypto;
use crate::identity::{Did, Keypair};

/// ALPN of this protocol; a peer speaking anything else fails the handshake.
pub const ALPN: &[u8] = b"icn-mesh/1";

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] =
    [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    #[error("TLS setup: {0}")]
    Rustls(#[from] TlsError),
    #[error("QUIC crypto setup: {0}")]
    Quic(String),
}

/// The DID of a raw public key presented in a handshake, if it is an Ed25519 key.
pub fn did_of_spki(spki: &[u8]) -> Option<Did> {
    let key: [u8; 32] = spki.strip_prefix(&ED25519_SPKI_PREFIX)?.try_into().ok()?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key).ok()?;
    Some(Did::from_public_key(&key))
}

fn certified_key(key: &Keypair) -> Arc<CertifiedKey> {
    let signing = crypto::signing_key(&Zeroizing::new(key.secret_seed()));
    let mut spki = ED25519_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(key.did().public_key().as_bytes());
    Arc::new(CertifiedKey::new(vec![CertificateDer::from(spki)], signing))
}

fn verify_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, TlsError> {
    if did_of_spki(cert.as_ref()).is_none() {
        return Err(TlsError::General("peer key is not an Ed25519 raw public key".into()));
    }
    verify_tls13_signature_with_raw_key(
        message,
        &SubjectPublicKeyInfoDer::from(cert.as_ref()),
        dss,
        &crypto::ED25519_ONLY,
    )
}

/// The client's check of the server: its raw key must be the DID we dialled.
#[derive(Debug)]
struct ExpectDid {
    expected: Did,
}

impl ServerCertVerifier for ExpectDid {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        match did_of_spki(end_entity.as_ref()) {
            Some(did) if did == self.expected && intermediates.is_empty() => {
                Ok(ServerCertVerified::assertion())
            }
            Some(did) => {
                Err(TlsError::General(format!("the server is {did}, not the expected {}", self.expected)))
            }
            None => Err(TlsError::General("the server did not present an Ed25519 raw public key".into())),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        Err(TlsError::General("TLS 1.2 is not spoken here".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// The server's check of clients: any Ed25519 raw key, which becomes the connection's DID.
#[derive(Debug)]
struct AnyDidClient;

impl ClientCertVerifier for AnyDidClient {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        if did_of_spki(end_entity.as_ref()).is_some() && intermediates.is_empty() {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(TlsError::General("the client did not present an Ed25519 raw public key".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        Err(TlsError::General("TLS 1.2 is not spoken here".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// TLS for a listening node: presents `key`, requires and checks a client key.
pub fn server_config(key: &Keypair) -> Result<rustls::ServerConfig, TlsSetupError> {
    let provider = crypto::provider();
    let certified = certified_key(key);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(AnyDidClient))
        .with_cert_resolver(Arc::new(rustls::server::AlwaysResolvesServerRawPublicKeys::new(certified)));
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// TLS for a dialling node: presents `key`, accepts only a server whose key is `server`.
pub fn client_config(key: &Keypair, server: &Did) -> Result<rustls::ClientConfig, TlsSetupError> {
    let provider = crypto::provider();
    let certified = certified_key(key);
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ExpectDid { expected: server.clone() }))
        .with_client_cert_resolver(Arc::new(rustls::client::AlwaysResolvesClientRawPublicKeys::new(
            certified,
        )));
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_round_trips_and_rejects_anything_else() {
        let key = Keypair::from_seed(&[3; 32]);
        let mut spki = ED25519_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(key.did().public_key().as_bytes());
        assert_eq!(did_of_spki(&spki).as_ref(), Some(key.did()));
        assert_eq!(did_of_spki(&spki[..43]), None);
        let mut longer = spki.clone();
        longer.push(0);
        assert_eq!(did_of_spki(&longer), None);
        spki[6] ^= 1;
        assert_eq!(did_of_spki(&spki), None);
    }
}
