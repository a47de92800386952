//! The cryptography under TLS, and nothing more: TLS 1.3 with AES-128-GCM (QUIC's Initial packets
//! need it) or ChaCha20-Poly1305 (faster on phones without AES instructions) from ring (aws-lc
//! cross-compiles badly), X25519 key exchange and Ed25519 handshake signatures on curve25519-dalek,
//! the curve the records already use. Naming only these, and not ring's `default_provider()`, keeps
//! ring's RSA, ECDSA, P-256/P-384 and its second Curve25519 out of the phone's library (0.4 MiB).
//! Handshake signatures are held to the records' strict rule ([`identity::verify_strict`]).

use std::sync::Arc;

use curve25519_dalek::montgomery::MontgomeryPoint;
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom, SharedSecret,
    SupportedKxGroup, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::{
    AlgorithmIdentifier, InvalidSignature, PrivateKeyDer, SignatureVerificationAlgorithm, alg_id,
};
use rustls::sign::{Signer, SigningKey};
use rustls::{Error as TlsError, NamedGroup, PeerMisbehaved, SignatureAlgorithm, SignatureScheme};
use zeroize::Zeroizing;

use crate::identity;

/// DER prefix of an Ed25519 PKCS#8 v1 private key (RFC 8410); the 32 seed bytes follow.
const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// The provider every TLS config here is built with (see the module's documentation).
pub(super) fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![&X25519],
        signature_verification_algorithms: ED25519_ONLY,
        secure_random: &SystemRandom,
        key_provider: &Ed25519Keys,
    })
}

/// X25519 (RFC 7748) key exchange on curve25519-dalek.
#[derive(Debug)]
struct X25519;

impl SupportedKxGroup for X25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, TlsError> {
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom::fill(secret.as_mut()).map_err(|_| TlsError::FailedToGetRandomBytes)?;
        let public = MontgomeryPoint::mul_base_clamped(*secret).to_bytes();
        Ok(Box::new(X25519Exchange { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

struct X25519Exchange {
    secret: Zeroizing<[u8; 32]>,
    public: [u8; 32],
}

impl ActiveKeyExchange for X25519Exchange {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, TlsError> {
        let peer: [u8; 32] = peer_pub_key.try_into().map_err(|_| PeerMisbehaved::InvalidKeyShare)?;
        let shared = Zeroizing::new(MontgomeryPoint(peer).mul_clamped(*self.secret).to_bytes());
        // A small-order peer key gives the all-zero secret, which both sides could be forced to.
        if shared.iter().all(|&b| b == 0) {
            return Err(PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared[..]))
    }

    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// The node's Ed25519 key signing its handshakes.
#[derive(Debug, Clone)]
struct Ed25519Signing(Arc<ed25519_dalek::SigningKey>);

impl SigningKey for Ed25519Signing {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered.contains(&SignatureScheme::ED25519).then(|| Box::new(self.clone()) as Box<dyn Signer>)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ED25519
    }
}

impl Signer for Ed25519Signing {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, TlsError> {
        Ok(ed25519_dalek::Signer::sign(self.0.as_ref(), message).to_bytes().to_vec())
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

pub(super) const ED25519_ONLY: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[&Ed25519Verify],
    mapping: &[(SignatureScheme::ED25519, &[&Ed25519Verify])],
};

/// Handshake signatures checked as records are: strict Ed25519 (`identity::verify_strict`).
#[derive(Debug)]
struct Ed25519Verify;

impl SignatureVerificationAlgorithm for Ed25519Verify {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        let key: [u8; 32] = public_key.try_into().map_err(|_| InvalidSignature)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| InvalidSignature)?;
        if identity::verify_strict(&key, message, signature) { Ok(()) } else { Err(InvalidSignature) }
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ED25519
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ED25519
    }
}

#[derive(Debug)]
struct SystemRandom;

impl SecureRandom for SystemRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        getrandom::fill(buf).map_err(|_| GetRandomFailed)
    }
}

/// Loads only Ed25519 PKCS#8 v1 keys (RFC 8410), the one kind this protocol has.
#[derive(Debug)]
struct Ed25519Keys;

impl KeyProvider for Ed25519Keys {
    fn load_private_key(&self, key_der: PrivateKeyDer<'static>) -> Result<Arc<dyn SigningKey>, TlsError> {
        let seed: [u8; 32] = match &key_der {
            PrivateKeyDer::Pkcs8(der) => der.secret_pkcs8_der().strip_prefix(&ED25519_PKCS8_PREFIX),
            _ => None,
        }
        .and_then(|seed| seed.try_into().ok())
        .ok_or_else(|| TlsError::General("only Ed25519 PKCS#8 keys are used here".into()))?;
        Ok(Arc::new(Ed25519Signing(Arc::new(ed25519_dalek::SigningKey::from_bytes(&seed)))))
    }
}

/// `seed`'s Ed25519 key as rustls signs handshakes with it.
pub(super) fn signing_key(seed: &[u8; 32]) -> Arc<dyn SigningKey> {
    Arc::new(Ed25519Signing(Arc::new(ed25519_dalek::SigningKey::from_bytes(seed))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;

    #[test]
    fn handshake_signatures_are_checked_strictly() {
        let key = Keypair::from_seed(&[5; 32]);
        let public = key.did().public_key().to_bytes();
        let signature = key.sign(b"transcript");
        assert!(Ed25519Verify.verify_signature(&public, b"transcript", &signature).is_ok());
        assert!(Ed25519Verify.verify_signature(&public, b"transcripT", &signature).is_err());
        assert!(Ed25519Verify.verify_signature(&public[..31], b"transcript", &signature).is_err());
        assert!(Ed25519Verify.verify_signature(&public, b"transcript", &signature[..63]).is_err());
        // A small-order key (the identity point) is refused even with a signature plain `verify` takes.
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        let mut forged = [0u8; 64];
        forged[0] = 1;
        let weak = ed25519_dalek::VerifyingKey::from_bytes(&identity_point).expect("a point");
        let forged_signature = ed25519_dalek::Signature::from_bytes(&forged);
        assert!(ed25519_dalek::Verifier::verify(&weak, b"anything", &forged_signature).is_ok());
        assert!(Ed25519Verify.verify_signature(&identity_point, b"anything", &forged).is_err());
    }

    #[test]
    fn x25519_agrees_and_refuses_small_order_keys() {
        let alice = X25519.start().expect("start");
        let bob = X25519.start().expect("start");
        let (alice_pub, bob_pub) = (alice.pub_key().to_vec(), bob.pub_key().to_vec());
        let from_alice = alice.complete(&bob_pub).expect("agree");
        let from_bob = bob.complete(&alice_pub).expect("agree");
        assert_eq!(from_alice.secret_bytes(), from_bob.secret_bytes());
        // RFC 7748 test vector: a scalar and a u-coordinate, and their product.
        let k = hex32("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4");
        let u = hex32("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c");
        let exchange = Box::new(X25519Exchange { secret: Zeroizing::new(k), public: [0; 32] });
        let shared = exchange.complete(&u).expect("vector");
        assert_eq!(
            shared.secret_bytes(),
            hex32("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")
        );
        // The identity's u-coordinate (0) has small order: the all-zero secret is refused.
        assert!(X25519.start().expect("start").complete(&[0; 32]).is_err());
        assert!(X25519.start().expect("start").complete(&[9; 31]).is_err());
    }

    #[test]
    fn key_provider_loads_ed25519_pkcs8_and_signs_verifiably() {
        let key = Keypair::from_seed(&[9; 32]);
        let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
        pkcs8.extend_from_slice(&key.secret_seed());
        let der = PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8));
        let signing = Ed25519Keys.load_private_key(der).expect("loads");
        let signer =
            signing.choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256, SignatureScheme::ED25519]);
        let signature = signer.expect("ed25519 offered").sign(b"hello").expect("signs");
        assert_eq!(signature, key.sign(b"hello"));
        assert!(signing.choose_scheme(&[SignatureScheme::RSA_PSS_SHA256]).is_none());
        let rsa = PrivateKeyDer::Pkcs1(vec![0u8; 10].into());
        assert!(Ed25519Keys.load_private_key(rsa).is_err());
    }

    fn hex32(text: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex");
        }
        out
    }
}
