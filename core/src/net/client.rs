//! The client side of the coordinator protocol: one connection, a stream per request. What
//! `icn job submit`, `icn ledger` and the phone library's balance query use.

use crate::identity::Keypair;
use crate::net::{self, Hello, PeerAddr, Role, frame};
use crate::protocol::{ClientReply, ClientRequest, MAX_MESSAGE_BYTES};

/// Sends one request on a connection of its own and hands every reply to `on_reply` until it
/// returns `false` or the stream ends.
pub async fn request(
    coordinator: &PeerAddr,
    key: &Keypair,
    request: &ClientRequest,
    on_reply: &mut dyn FnMut(ClientReply) -> bool,
) -> Result<(), String> {
    let session = Session::open(coordinator, key).await?;
    let result = session.request(request, on_reply).await;
    session.close().await;
    result
}

/// One connection to a coordinator for many requests, one stream each (concurrent requests are
/// fine): what a program that submits many jobs uses instead of [`request`].
#[derive(Debug)]
pub struct Session {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    /// The stream the hello went over; it carries the first request.
    first: std::sync::Mutex<Option<(quinn::SendStream, quinn::RecvStream)>>,
}

impl Session {
    pub async fn open(coordinator: &PeerAddr, key: &Keypair) -> Result<Self, String> {
        let bind = if coordinator.addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
        let endpoint =
            net::dialer(bind.parse().map_err(|_| "bind address".to_owned())?).map_err(|e| e.to_string())?;
        let conn = net::connect_kept_alive(&endpoint, key, coordinator).await.map_err(|e| e.to_string())?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        frame::write(&mut send, &Hello::new(Role::Client), MAX_MESSAGE_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        let hello: Hello = frame::read(&mut recv, MAX_MESSAGE_BYTES).await.map_err(|e| e.to_string())?;
        hello.check().map_err(|e| e.to_string())?;
        Ok(Self { endpoint, conn, first: std::sync::Mutex::new(Some((send, recv))) })
    }

    /// Sends `request` and hands every reply to `on_reply` until it returns `false` or the stream
    /// ends.
    pub async fn request(
        &self,
        request: &ClientRequest,
        on_reply: &mut dyn FnMut(ClientReply) -> bool,
    ) -> Result<(), String> {
        let first = self.first.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (mut send, mut recv) = match first {
            Some(streams) => streams,
            None => self.conn.open_bi().await.map_err(|e| e.to_string())?,
        };
        frame::write(&mut send, request, MAX_MESSAGE_BYTES).await.map_err(|e| e.to_string())?;
        loop {
            match frame::read::<ClientReply>(&mut recv, MAX_MESSAGE_BYTES).await {
                Ok(reply) => {
                    if !on_reply(reply) {
                        break;
                    }
                }
                Err(frame::FrameError::Closed) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    pub async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        self.endpoint.wait_idle().await;
    }
}
