//! A minimal Kafka protocol client on `kafka-protocol` codecs: one connection, one request in
//! flight. The brokers use it among themselves (followers' Fetch, OffsetsForLeaderEpoch) and the
//! operator for the admin APIs (CreateTopics, IncrementalAlterConfigs, partition reassignment)
//! that librdkafka's admin client does not all offer.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response frame accepted (a broker's fetch response is bounded by
/// `replica.fetch.response.max.bytes` plus one batch per partition).
const FRAME_BYTES_MAX: usize = 512 * 1024 * 1024;

pub struct Connection {
    stream: TcpStream,
    client_id: StrBytes,
    correlation_id: i32,
    timeout: Duration,
}

impl Connection {
    pub async fn connect(addr: &str, client_id: String, timeout: Duration) -> anyhow::Result<Self> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connecting to {addr} timed out"))?
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            client_id: StrBytes::from_string(client_id),
            correlation_id: 0,
            timeout,
        })
    }

    /// Sends one request and waits for its response (at most the socket timeout).
    pub async fn call<R: Request>(&mut self, version: i16, req: &R) -> anyhow::Result<R::Response> {
        tokio::time::timeout(self.timeout, self.call_inner(version, req))
            .await
            .map_err(|_| anyhow!("no response to {:?} in {:?}", R::KEY, self.timeout))?
    }

    async fn call_inner<R: Request>(
        &mut self,
        version: i16,
        req: &R,
    ) -> anyhow::Result<R::Response> {
        let key = ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown api key {}", R::KEY))?;
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut buf = BytesMut::with_capacity(256);
        buf.extend_from_slice(&[0; 4]);
        header.encode(&mut buf, key.request_header_version(version))?;
        req.encode(&mut buf, version)?;
        let len = (buf.len() - 4) as u32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&buf).await?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).await?;
        let size = u32::from_be_bytes(size) as usize;
        if size > FRAME_BYTES_MAX {
            bail!("response frame of {size} bytes is too large");
        }
        let mut frame = vec![0u8; size];
        self.stream.read_exact(&mut frame).await?;
        let mut frame = Bytes::from(frame);
        let header = ResponseHeader::decode(&mut frame, key.response_header_version(version))?;
        if header.correlation_id != self.correlation_id {
            bail!(
                "response correlation id {} does not match request {}",
                header.correlation_id,
                self.correlation_id
            );
        }
        <R::Response as Decodable>::decode(&mut frame, version)
    }
}
