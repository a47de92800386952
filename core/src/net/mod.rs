//! The transport: QUIC (quinn) with the node's ed25519 key as its TLS identity, postcard frames.
//!
//! - `tls` — RFC 7250 raw public keys; the connection *is* the identity: a client checks the server
//!   is the DID it dialled, the server learns the client's DID from the handshake ([`peer_did`]).
//! - `frame` — length-prefixed postcard frames with a size cap checked before allocation.
//! - [`PeerAddr`] — `DID@HOST:PORT`, the address format of every command that takes a peer.
//! - [`Hello`] — the first frame each way on a connection's control stream: protocol version and role.

pub mod client;
mod crypto;
pub mod frame;
pub mod tls;

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::identity::{Did, Keypair};

/// Version of the wire protocol spoken in [`Hello`].
pub const WIRE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    #[error("`{0}` is not an address: write DID@HOST:PORT (the coordinator prints its own on start)")]
    BadAddress(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    #[error("cannot open a QUIC endpoint on {addr}: {why}")]
    Bind { addr: String, why: String },
    #[error("cannot connect to {peer}: {why}")]
    Connect { peer: String, why: String },
    #[error("the peer did not present an Ed25519 key")]
    NoPeerIdentity,
    #[error(transparent)]
    Frame(#[from] frame::FrameError),
    #[error("the peer speaks wire version {theirs}, this node speaks {WIRE_VERSION}")]
    Version { theirs: u32 },
}

/// A peer's address: its DID and where to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    pub did: Did,
    pub addr: SocketAddr,
}

impl PeerAddr {
    /// Parses `DID@HOST:PORT` (HOST may be a name, an IPv4 address or a bracketed IPv6 address).
    pub fn parse(text: &str) -> Result<Self, NetError> {
        let bad = || NetError::BadAddress(text.chars().take(200).collect());
        let (did, host) = text.trim().rsplit_once('@').ok_or_else(bad)?;
        let did = Did::parse(did).map_err(|_| bad())?;
        let addr = host.to_socket_addrs().map_err(|_| bad())?.next().ok_or_else(bad)?;
        Ok(Self { did, addr })
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.did, self.addr)
    }
}

/// What a node is on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Coordinator,
    Executor,
    Client,
}

/// The first frame each way on a connection's first bidirectional stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    pub role: Role,
    /// Free text, e.g. `icn 0.1.0`, for logs.
    pub agent: String,
}

impl Hello {
    pub fn new(role: Role) -> Self {
        Self { version: WIRE_VERSION, role, agent: format!("icn {}", env!("CARGO_PKG_VERSION")) }
    }

    /// Refuses a peer that speaks another wire version.
    pub fn check(&self) -> Result<(), NetError> {
        if self.version == WIRE_VERSION { Ok(()) } else { Err(NetError::Version { theirs: self.version }) }
    }
}

/// How long a silent connection lives. Long, because on a phone every wake-up costs battery: an
/// idle executor pings every [`EXECUTOR_KEEPALIVE`] instead of reconnecting every minute. Measured
/// (`ffi/benches/device.rs`): a reconnect a minute cost 15 wake-ups a minute; one ping costs about
/// six (the timer, the send, the peer's ACK, the loss-detection timer), so pings come every 270 s.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// How often an idle executor's connection pings the coordinator.
pub const EXECUTOR_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(270);

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    acks_ride_on_answers(&mut t);
    Arc::new(t)
}

/// How many ack-eliciting packets a peer may hold unacknowledged before it must send an ACK of its
/// own (QUIC's default: one, so every second packet is answered at once).
pub const ACK_ELICITING_THRESHOLD: u32 = 16;

/// Asks the peer (QUIC ACK frequency extension) to acknowledge at most every
/// [`ACK_ELICITING_THRESHOLD`] + 1 packets or after its `max_ack_delay`, instead of every second
/// packet. The protocol is request and answer: an executor answers an offer with a bid and an award
/// with a result, and its ACK rides on the answer. With the default, a receipt followed by the next
/// offer made the executor send an ACK-only datagram before its bid — a send on its side, a wake-up
/// and a receive on the coordinator's, at the moment the job waits for that bid; on a phone, a
/// wake-up of its radio for nothing.
fn acks_ride_on_answers(t: &mut quinn::TransportConfig) {
    let mut acks = quinn::AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(quinn::VarInt::from_u32(ACK_ELICITING_THRESHOLD));
    t.ack_frequency_config(Some(acks));
}

/// A QUIC endpoint that accepts connections as `key` (and can also dial out).
pub fn listen(key: &Keypair, bind: SocketAddr) -> Result<quinn::Endpoint, NetError> {
    let tls = tls::server_config(key)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| tls::TlsSetupError::Quic(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport());
    let bind_error = |why: String| NetError::Bind { addr: bind.to_string(), why };
    let socket = std::net::UdpSocket::bind(bind).map_err(|e| bind_error(e.to_string()))?;
    let runtime = quinn::default_runtime().ok_or_else(|| bind_error("no async runtime".into()))?;
    quinn::Endpoint::new(endpoint_config(key), Some(server), socket, runtime)
        .map_err(|e| bind_error(e.to_string()))
}

/// The stateless-reset key and the connection-id key are derived from the node's key, so they survive
/// a restart: packets still arriving on a connection from before a crash carry connection ids the new
/// endpoint recognises as its own, and are answered with a reset the peer can verify — the peer
/// reconnects at once instead of waiting out the idle timeout.
fn endpoint_config(key: &Keypair) -> quinn::EndpointConfig {
    use sha2::{Digest, Sha256};
    let derive = |label: &[u8]| {
        let mut h = Sha256::new();
        h.update(label);
        h.update(key.secret_seed());
        h.finalize()
    };
    let reset_key =
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &derive(b"icn-mesh stateless reset key v1"));
    let cid = derive(b"icn-mesh connection id key v1");
    let cid_key = u64::from_be_bytes([cid[0], cid[1], cid[2], cid[3], cid[4], cid[5], cid[6], cid[7]]);
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    config
}

/// A QUIC endpoint for dialling out only.
pub fn dialer(bind: SocketAddr) -> Result<quinn::Endpoint, NetError> {
    quinn::Endpoint::client(bind).map_err(|e| NetError::Bind { addr: bind.to_string(), why: e.to_string() })
}

/// Dials `peer` as `key`; succeeds only if the peer proves it holds `peer.did`'s key.
///
/// The connection pings every [`EXECUTOR_KEEPALIVE`] when nothing else is said, so an idle
/// executor stays connected at under two wake-ups a minute (1.8 measured). Clients that wait on a long job use
/// [`connect_kept_alive`].
pub async fn connect(
    endpoint: &quinn::Endpoint,
    key: &Keypair,
    peer: &PeerAddr,
) -> Result<quinn::Connection, NetError> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    t.keep_alive_interval(Some(EXECUTOR_KEEPALIVE));
    acks_ride_on_answers(&mut t);
    connect_with(endpoint, key, peer, Arc::new(t)).await
}

/// [`connect`] with a keep-alive ping every 15 s, for clients following a job to its end.
pub async fn connect_kept_alive(
    endpoint: &quinn::Endpoint,
    key: &Keypair,
    peer: &PeerAddr,
) -> Result<quinn::Connection, NetError> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(quinn::VarInt::from_u32(60_000).into()));
    t.keep_alive_interval(Some(std::time::Duration::from_secs(15)));
    acks_ride_on_answers(&mut t);
    connect_with(endpoint, key, peer, Arc::new(t)).await
}

async fn connect_with(
    endpoint: &quinn::Endpoint,
    key: &Keypair,
    peer: &PeerAddr,
    transport_config: Arc<quinn::TransportConfig>,
) -> Result<quinn::Connection, NetError> {
    let fail = |why: String| NetError::Connect { peer: peer.to_string(), why };
    let tls = tls::client_config(key, &peer.did)?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| fail(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(transport_config);
    // The server name is not checked (the DID is); quinn still needs a syntactically valid one.
    let connecting = endpoint.connect_with(client, peer.addr, "icn-mesh").map_err(|e| fail(e.to_string()))?;
    connecting.await.map_err(|e| fail(e.to_string()))
}

/// The DID the peer proved in the handshake.
pub fn peer_did(connection: &quinn::Connection) -> Result<Did, NetError> {
    let identity = connection.peer_identity().ok_or(NetError::NoPeerIdentity)?;
    let certs = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .map_err(|_| NetError::NoPeerIdentity)?;
    certs.first().and_then(|c| tls::did_of_spki(c.as_ref())).ok_or(NetError::NoPeerIdentity)
}
