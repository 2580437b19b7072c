//! Kahuna's agent RPC, wire-compatible with upstream Kowabunga.
//!
//! The agent dials `<kahuna>/ws` (wss; ws only in insecure mode) with the three
//! `X-WS-Kowabunga-*` headers, and then the roles invert: on that socket the agent is
//! the RPC *server* and Kahuna the client. Frames are JSON in binary WebSocket messages,
//! modelled on Go's `net/rpc`: `{"id", "method", "params"}` in, `{"id", "result",
//! "error"}` out, with Go field names as keys and the error as a string.
//!
//! - [`Service`]: what an agent kind implements (`Kiwi`, `Kaktus`, `Kontroller`): its
//!   method list and `call`. `<Kind>.Capabilities` is answered here from that list.
//! - [`dispatch`]: one frame in, at most one frame out. Pure, never panics.
//! - [`Agent`]: dial, serve, keepalive (ping every 9 s, peer silent 10 s = gone),
//!   reconnect with capped exponential back-off and jitter.

mod agent;
mod backoff;
mod credentials;
mod dial;
#[cfg(feature = "fake-kahuna")]
pub mod fake_kahuna;
mod frame;
mod service;

pub use agent::{Agent, Link, Options};
pub use backoff::Backoff;
pub use credentials::{Credentials, Endpoint, EndpointError};
/// rustls client configuration (ring): the pinned CA file if given, else the system
/// roots. For other HTTPS clients of an agent (the kontroller's metadata fetch).
pub use dial::tls_config as client_tls_config;
pub use frame::{MISSING_PARAMS, dispatch};
pub use service::Service;

/// Header carrying the agent kind (`Kiwi`, `Kaktus`, `Kontroller`).
pub const HEADER_AGENT: &str = "X-WS-Kowabunga-Agent";
/// Header carrying the agent id Kahuna issued.
pub const HEADER_ID: &str = "X-WS-Kowabunga-Id";
/// Header carrying the agent's API key (a secret: never logged).
pub const HEADER_API_KEY: &str = "X-WS-Kowabunga-Api-Key";
