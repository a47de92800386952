//! Frames on a QUIC stream: a 4-byte big-endian length, then that many bytes of postcard.
//!
//! The length is checked against a cap *before* anything is allocated, so a peer announcing a huge
//! frame costs us four bytes, not memory. A frame that does not decode is an error, never a panic.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Default cap on one frame: records and messages are small; blobs travel in chunks.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("the peer announced a {len}-byte frame, over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("the stream ended")]
    Closed,
    #[error("stream read failed: {0}")]
    Read(String),
    #[error("stream write failed: {0}")]
    Write(String),
}

/// Encodes `value` as one frame (length prefix included).
pub fn encode<T: Serialize>(value: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let body = postcard::to_allocvec(value).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if body.len() > max {
        return Err(FrameError::TooLarge { len: body.len(), max });
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a frame body (without its length prefix).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    postcard::from_bytes(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Writes one frame to a QUIC send stream.
pub async fn write<T: Serialize>(
    send: &mut quinn::SendStream,
    value: &T,
    max: usize,
) -> Result<(), FrameError> {
    let bytes = encode(value, max)?;
    send.write_all(&bytes).await.map_err(|e| FrameError::Write(e.to_string()))
}

/// Reads one frame from a QUIC receive stream; `Closed` at a clean end between frames.
pub async fn read<T: DeserializeOwned>(recv: &mut quinn::RecvStream, max: usize) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Err(FrameError::Closed),
        Err(e) => return Err(FrameError::Read(e.to_string())),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(|e| FrameError::Read(e.to_string()))?;
    decode(&body)
}
