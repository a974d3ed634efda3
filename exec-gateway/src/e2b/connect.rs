//! The Connect protocol (connectrpc.com/docs/protocol) as the e2b SDKs speak it to envd, on top of
//! axum: unary calls (`application/json` or `application/proto`), server-streaming calls
//! (`application/connect+json` or `+proto`: 5-byte envelopes, then an end-of-stream envelope
//! carrying the error, if any) and a client-streaming call's request envelopes. HTTP itself is
//! axum's and hyper's; only the envelope framing, a few bytes, is ours.

use std::fmt;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Envelope flag: the message is compressed (not supported: the SDKs do not compress requests).
const FLAG_COMPRESSED: u8 = 0x01;
/// Envelope flag: the end-of-stream message.
const FLAG_END: u8 = 0x02;
/// Largest request message accepted (a unary body or one envelope).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// A Connect error: a gRPC code and a message (the same codes as the gRPC API).
#[derive(Debug, Clone)]
pub struct ConnectError {
    pub code: tonic::Code,
    pub message: String,
}

impl ConnectError {
    pub fn new(code: tonic::Code, message: impl Into<String>) -> Self {
        ConnectError {
            code,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(tonic::Code::InvalidArgument, message)
    }
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(tonic::Code::Unimplemented, message)
    }
    fn json(&self) -> serde_json::Value {
        serde_json::json!({"code": code_name(self.code), "message": self.message})
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", code_name(self.code), self.message)
    }
}

impl From<tonic::Status> for ConnectError {
    fn from(s: tonic::Status) -> Self {
        ConnectError::new(s.code(), s.message())
    }
}

impl IntoResponse for ConnectError {
    /// A unary call's error: the HTTP status of the code and `{"code","message"}`.
    fn into_response(self) -> Response {
        let mut r = (http_status(self.code), axum::Json(self.json())).into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    }
}

/// Connect's name of a code.
pub fn code_name(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        Ok => "ok",
        Cancelled => "canceled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status of a unary error (the Connect protocol's table).
pub fn http_status(c: tonic::Code) -> StatusCode {
    use tonic::Code::*;
    match c {
        Ok => StatusCode::OK,
        Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::REQUEST_TIMEOUT),
        InvalidArgument | FailedPrecondition | OutOfRange => StatusCode::BAD_REQUEST,
        DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        NotFound => StatusCode::NOT_FOUND,
        AlreadyExists | Aborted => StatusCode::CONFLICT,
        PermissionDenied => StatusCode::FORBIDDEN,
        ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Unauthenticated => StatusCode::UNAUTHORIZED,
        Unknown | Internal | DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// How messages are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Json,
    Proto,
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .unwrap_or("")
}

/// The codec of a unary call (`application/json` or `application/proto`).
pub fn unary_codec(headers: &HeaderMap) -> Result<Codec, ConnectError> {
    match content_type(headers) {
        "application/json" => Ok(Codec::Json),
        "application/proto" => Ok(Codec::Proto),
        other => Err(ConnectError::invalid(format!(
            "content-type {other:?} is not a Connect unary type (application/json or application/proto)"
        ))),
    }
}

/// The codec of a streaming call (`application/connect+json` or `application/connect+proto`).
pub fn stream_codec(headers: &HeaderMap) -> Result<Codec, ConnectError> {
    match content_type(headers) {
        "application/connect+json" => Ok(Codec::Json),
        "application/connect+proto" => Ok(Codec::Proto),
        other => Err(ConnectError::invalid(format!(
            "content-type {other:?} is not a Connect streaming type (application/connect+json or application/connect+proto)"
        ))),
    }
}

/// Decodes one message.
pub fn decode<M: prost::Message + DeserializeOwned + Default>(
    codec: Codec,
    bytes: &[u8],
) -> Result<M, ConnectError> {
    match codec {
        // An empty JSON body is the empty message, as connect-go reads it.
        Codec::Json if bytes.iter().all(u8::is_ascii_whitespace) => Ok(M::default()),
        Codec::Json => serde_json::from_slice(bytes)
            .map_err(|e| ConnectError::invalid(format!("request message: {e}"))),
        Codec::Proto => {
            M::decode(bytes).map_err(|e| ConnectError::invalid(format!("request message: {e}")))
        }
    }
}

fn encode<M: prost::Message + Serialize>(codec: Codec, m: &M) -> Bytes {
    match codec {
        Codec::Json => Bytes::from(serde_json::to_vec(m).unwrap_or_else(|_| b"{}".to_vec())),
        Codec::Proto => Bytes::from(m.encode_to_vec()),
    }
}

/// A unary call's answer.
pub fn unary<M: prost::Message + Serialize>(codec: Codec, m: &M) -> Response {
    let ct = match codec {
        Codec::Json => "application/json",
        Codec::Proto => "application/proto",
    };
    ([(header::CONTENT_TYPE, ct)], encode(codec, m)).into_response()
}

/// Splits `body` into its envelopes' messages (a streaming request).
pub fn envelopes(mut body: &[u8]) -> Result<Vec<&[u8]>, ConnectError> {
    let mut out = Vec::new();
    while !body.is_empty() {
        if body.len() < 5 {
            return Err(ConnectError::invalid("truncated envelope header"));
        }
        let flags = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        if flags & FLAG_COMPRESSED != 0 {
            return Err(ConnectError::unimplemented(
                "compressed messages are not supported; send them uncompressed",
            ));
        }
        if len > MAX_MESSAGE {
            return Err(ConnectError::new(
                tonic::Code::ResourceExhausted,
                format!("message of {len} bytes is over the limit of {MAX_MESSAGE}"),
            ));
        }
        if body.len() < 5 + len {
            return Err(ConnectError::invalid("truncated envelope"));
        }
        if flags & FLAG_END == 0 {
            out.push(&body[5..5 + len]);
        }
        body = &body[5 + len..];
    }
    Ok(out)
}

/// The one request message of a server-streaming call.
pub fn stream_request<M: prost::Message + DeserializeOwned + Default>(
    codec: Codec,
    body: &[u8],
) -> Result<M, ConnectError> {
    match envelopes(body)?.as_slice() {
        [m] => decode(codec, m),
        ms => Err(ConnectError::invalid(format!(
            "a server-streaming call takes exactly one request message, got {}",
            ms.len()
        ))),
    }
}

fn envelope(flags: u8, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + data.len());
    b.put_u8(flags);
    b.put_u32(data.len() as u32);
    b.put_slice(data);
    b.freeze()
}

fn end_of_stream(err: Option<&ConnectError>) -> Bytes {
    let v = match err {
        Some(e) => serde_json::json!({"error": e.json()}),
        None => serde_json::json!({}),
    };
    envelope(FLAG_END, &serde_json::to_vec(&v).unwrap_or_default())
}

/// A streaming call's answer: status 200, one envelope per message, and the end-of-stream
/// envelope (with the error that ended the stream, if one did). The stream is polled only as
/// fast as the client reads (hyper's body backpressure).
pub fn streaming<M, S>(codec: Codec, messages: S) -> Response
where
    M: prost::Message + Serialize + Send + 'static,
    S: Stream<Item = Result<M, ConnectError>> + Send + 'static,
{
    let ct = match codec {
        Codec::Json => "application/connect+json",
        Codec::Proto => "application/connect+proto",
    };
    // Ends at the first error, which goes into the end-of-stream envelope.
    let body = futures::stream::unfold(
        (Box::pin(messages), false),
        move |(mut s, done)| async move {
            if done {
                return None;
            }
            match s.next().await {
                Some(Ok(m)) => Some((envelope(0, &encode(codec, &m)), (s, false))),
                Some(Err(e)) => Some((end_of_stream(Some(&e)), (s, true))),
                None => Some((end_of_stream(None), (s, true))),
            }
        },
    )
    .map(Ok::<_, std::convert::Infallible>);
    ([(header::CONTENT_TYPE, ct)], Body::from_stream(body)).into_response()
}

/// A streaming call that failed before its first message: still status 200 (Connect streaming),
/// the error in the end-of-stream envelope.
pub fn streaming_error(codec: Codec, e: ConnectError) -> Response {
    let ct = match codec {
        Codec::Json => "application/connect+json",
        Codec::Proto => "application/connect+proto",
    };
    ([(header::CONTENT_TYPE, ct)], end_of_stream(Some(&e))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2b::proto::process as pp;

    #[test]
    fn envelopes_split_and_end_message_is_skipped() {
        let mut b = envelope(0, b"{}").to_vec();
        b.extend_from_slice(&envelope(FLAG_END, b"{}"));
        assert_eq!(envelopes(&b).unwrap(), vec![&b"{}"[..]]);
        assert!(envelopes(&b[..3]).is_err());
        assert!(envelopes(&envelope(FLAG_COMPRESSED, b"x")).is_err());
        let mut short = envelope(0, b"{}").to_vec();
        short.pop();
        assert!(envelopes(&short).is_err());
    }

    /// Arbitrary bodies never panic the envelope reader or the decoders.
    #[test]
    fn arbitrary_bodies_never_panic() {
        let mut x: u64 = 0x2545f4914f6cdd1d;
        for _ in 0..20_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = ((x >> 33) % 40) as usize;
            let b: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 7) as u8 * 37
                })
                .collect();
            let _ = envelopes(&b);
            let _ = stream_request::<pp::StartRequest>(Codec::Json, &b);
            let _ = stream_request::<pp::StartRequest>(Codec::Proto, &b);
            let _ = decode::<pp::SendInputRequest>(Codec::Proto, &b);
        }
    }

    #[test]
    fn json_uses_the_protobuf_mapping() {
        let e = pp::StartResponse {
            event: Some(pp::ProcessEvent {
                event: Some(pp::process_event::Event::Data(pp::process_event::DataEvent {
                    output: Some(pp::process_event::data_event::Output::Stdout(Bytes::from_static(b"hi\n"))),
                })),
            }),
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"event": {"data": {"stdout": "aGkK"}}})
        );
        let r: pp::StartRequest = decode(
            Codec::Json,
            br#"{"process":{"cmd":"/bin/bash","args":["-l","-c","echo hi"],"envs":{"A":"1"}},"stdin":false}"#,
        )
        .unwrap();
        assert_eq!(r.process.unwrap().args, vec!["-l", "-c", "echo hi"]);
        let err = decode::<pp::StartRequest>(Codec::Json, br#"{"process":{"cmd":7}}"#).unwrap_err();
        assert_eq!(err.code, tonic::Code::InvalidArgument);
        assert_eq!(decode::<pp::ListRequest>(Codec::Json, b"").unwrap(), pp::ListRequest {});
    }

    #[test]
    fn error_statuses_follow_connect() {
        assert_eq!(http_status(tonic::Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(tonic::Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(code_name(tonic::Code::DeadlineExceeded), "deadline_exceeded");
        let end = end_of_stream(Some(&ConnectError::new(tonic::Code::NotFound, "no such process")));
        assert_eq!(end[0], FLAG_END);
        let v: serde_json::Value = serde_json::from_slice(&end[5..]).unwrap();
        assert_eq!(v["error"]["code"], "not_found");
    }
}
