//! The transport over real QUIC on loopback: the connection is the identity, and the negatives —
//! a server with another key, a client with no key, a verifier that skips the check, oversized and
//! malformed frames, another wire version — all fail the way they should.

use std::sync::Arc;

use icn_mesh_core::identity::Keypair;
use icn_mesh_core::net::frame::{self, FrameError, MAX_FRAME_BYTES};
use icn_mesh_core::net::{self, Hello, NetError, PeerAddr, Role, WIRE_VERSION};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn loopback() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

/// Accepts one connection and returns the DID it proved, or the handshake error.
async fn accept_one(server: quinn::Endpoint) -> Result<quinn::Connection, String> {
    let incoming = server.accept().await.ok_or("endpoint closed")?;
    incoming.await.map_err(|e| e.to_string())
}

#[test]
fn the_connection_is_the_identity() {
    rt().block_on(async {
        let (server_key, client_key) = (Keypair::from_seed(&[1; 32]), Keypair::from_seed(&[2; 32]));
        let server = net::listen(&server_key, loopback()).expect("listen");
        let peer = PeerAddr { did: server_key.did().clone(), addr: server.local_addr().expect("addr") };
        let accepted = tokio::spawn(accept_one(server.clone()));
        let client = net::dialer(loopback()).expect("dialer");
        let conn = net::connect(&client, &client_key, &peer).await.expect("connects");
        assert_eq!(&net::peer_did(&conn).expect("server DID"), server_key.did());
        let server_side = accepted.await.expect("task").expect("accepted");
        assert_eq!(&net::peer_did(&server_side).expect("client DID"), client_key.did());

        // Hello both ways on the first stream, then a clean end.
        let (mut send, _recv) = conn.open_bi().await.expect("stream");
        frame::write(&mut send, &Hello::new(Role::Executor), MAX_FRAME_BYTES).await.expect("write");
        send.finish().expect("finish");
        let (_s, mut r) = server_side.accept_bi().await.expect("accept stream");
        let hello: Hello = frame::read(&mut r, MAX_FRAME_BYTES).await.expect("hello");
        assert_eq!((hello.version, hello.role), (WIRE_VERSION, Role::Executor));
        hello.check().expect("same version");
        assert!(matches!(frame::read::<Hello>(&mut r, MAX_FRAME_BYTES).await, Err(FrameError::Closed)));
        conn.close(0u32.into(), b"done");
    });
}

#[test]
fn a_server_holding_another_key_is_refused() {
    rt().block_on(async {
        let (impostor, client_key) = (Keypair::from_seed(&[3; 32]), Keypair::from_seed(&[4; 32]));
        let expected = Keypair::from_seed(&[5; 32]);
        let server = net::listen(&impostor, loopback()).expect("listen");
        let peer = PeerAddr { did: expected.did().clone(), addr: server.local_addr().expect("addr") };
        tokio::spawn(accept_one(server.clone()));
        let client = net::dialer(loopback()).expect("dialer");
        let err = net::connect(&client, &client_key, &peer).await.expect_err("impostor refused");
        assert!(matches!(err, NetError::Connect { .. }), "{err}");
        assert!(err.to_string().contains("not the expected"), "{err}");
    });
}

/// A verifier that accepts any raw key: what a client that skipped the DID check would do.
#[derive(Debug)]
struct SkipsTheCheck;

impl ServerCertVerifier for SkipsTheCheck {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

fn raw_client(verifier: Arc<dyn ServerCertVerifier>, key: Option<&Keypair>) -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match key {
        None => builder.with_no_client_auth(),
        Some(key) => {
            // The same raw-key resolver the product uses, built from the public API.
            let full = net::tls::client_config(key, key.did()).expect("config");
            let mut c = builder.with_no_client_auth();
            c.client_auth_cert_resolver = full.client_auth_cert_resolver.clone();
            c
        }
    };
    config.alpn_protocols = vec![net::tls::ALPN.to_vec()];
    quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(config).expect("quic"),
    ))
}

#[test]
fn the_did_check_is_what_refuses_an_impostor() {
    rt().block_on(async {
        let (impostor, client_key) = (Keypair::from_seed(&[6; 32]), Keypair::from_seed(&[7; 32]));
        let server = net::listen(&impostor, loopback()).expect("listen");
        let addr = server.local_addr().expect("addr");
        let accepting = tokio::spawn(accept_one(server.clone()));
        // A client that skips the check is fooled: it talks to whoever answers.
        let client = net::dialer(loopback()).expect("dialer");
        let fooled =
            client.connect_with(raw_client(Arc::new(SkipsTheCheck), Some(&client_key)), addr, "icn-mesh");
        let conn = fooled.expect("dial").await.expect("a skipping verifier accepts the impostor");
        assert_eq!(&net::peer_did(&conn).expect("did"), impostor.did());
        accepting.await.expect("task").expect("accepted");
        // Ours, expecting someone else, refuses the same server.
        tokio::spawn(accept_one(server.clone()));
        let someone_else = Keypair::from_seed(&[8; 32]);
        let peer = PeerAddr { did: someone_else.did().clone(), addr };
        assert!(net::connect(&client, &client_key, &peer).await.is_err());
    });
}

#[test]
fn a_client_without_a_key_is_refused() {
    rt().block_on(async {
        let server_key = Keypair::from_seed(&[9; 32]);
        let server = net::listen(&server_key, loopback()).expect("listen");
        let addr = server.local_addr().expect("addr");
        let accepting = tokio::spawn(accept_one(server.clone()));
        let client = net::dialer(loopback()).expect("dialer");
        let attempt =
            client.connect_with(raw_client(Arc::new(SkipsTheCheck), None), addr, "icn-mesh").expect("dial");
        // The handshake may complete on the client before the server's refusal arrives; the
        // server never accepts it, and the connection dies.
        let server_result = accepting.await.expect("task");
        assert!(server_result.is_err(), "the server accepted a client with no key");
        if let Ok(conn) = attempt.await {
            assert!(conn.open_bi().await.is_err() || conn.closed().await.to_string().contains("certificate"));
        }
    });
}

#[test]
fn oversized_malformed_and_foreign_frames_are_errors() {
    rt().block_on(async {
        let (server_key, client_key) = (Keypair::from_seed(&[10; 32]), Keypair::from_seed(&[11; 32]));
        let server = net::listen(&server_key, loopback()).expect("listen");
        let peer = PeerAddr { did: server_key.did().clone(), addr: server.local_addr().expect("addr") };
        let accepted = tokio::spawn(accept_one(server.clone()));
        let client = net::dialer(loopback()).expect("dialer");
        let conn = net::connect(&client, &client_key, &peer).await.expect("connects");
        let server_side = accepted.await.expect("task").expect("accepted");

        let (mut send, _recv) = conn.open_bi().await.expect("stream");
        // 1. A frame announcing 4 GiB: refused from its length alone.
        send.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
        let (_s, mut r) = server_side.accept_bi().await.expect("accept");
        let err = frame::read::<Hello>(&mut r, MAX_FRAME_BYTES).await.expect_err("too large");
        assert!(matches!(err, FrameError::TooLarge { len, .. } if len == u32::MAX as usize), "{err}");

        // 2. A frame whose body is not a Hello.
        let (mut send, _recv) = conn.open_bi().await.expect("stream");
        send.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.expect("write");
        let (_s, mut r) = server_side.accept_bi().await.expect("accept");
        assert!(matches!(frame::read::<Hello>(&mut r, MAX_FRAME_BYTES).await, Err(FrameError::Malformed(_))));

        // 3. A truncated frame: the stream ends inside it.
        let (mut send, _recv) = conn.open_bi().await.expect("stream");
        send.write_all(&[0, 0, 0, 10, 1, 2]).await.expect("write");
        send.finish().expect("finish");
        let (_s, mut r) = server_side.accept_bi().await.expect("accept");
        assert!(matches!(frame::read::<Hello>(&mut r, MAX_FRAME_BYTES).await, Err(FrameError::Read(_))));

        // 4. Another wire version is refused by the hello check.
        let future = Hello { version: WIRE_VERSION + 1, ..Hello::new(Role::Executor) };
        assert!(matches!(future.check(), Err(NetError::Version { .. })));
        // 5. Encoding refuses a frame over the cap too.
        assert!(matches!(frame::encode(&vec![0u8; 100], 10), Err(FrameError::TooLarge { .. })));
    });
}

#[test]
fn peer_addresses_are_did_at_host_port() {
    let key = Keypair::from_seed(&[12; 32]);
    let text = format!("{}@127.0.0.1:7000", key.did());
    let addr = PeerAddr::parse(&text).expect("parses");
    assert_eq!(addr.to_string(), text);
    assert!(PeerAddr::parse(&format!("{}@[::1]:7000", key.did())).is_ok());
    for bad in ["", "127.0.0.1:7000", "did:key:zzz@127.0.0.1:7000", &format!("{}@nowhere", key.did())] {
        let err = PeerAddr::parse(bad).expect_err(bad);
        assert!(err.to_string().contains("DID@HOST:PORT"), "{err}");
    }
}
