//! What runs beside the API in a `serve` process: the relay (log →
//! RabbitMQ, [`relay`]), the runner ([`runner`]), the device gateway
//! ([`gateway`]), the graph follower releasing tasks whose parents ended
//! ([`graphs`]), the webhook deliverer ([`webhooks`]), the leader lock that keeps one relay and one gateway
//! active across processes, and the one backoff their retries share.

pub(crate) mod backoff;
pub mod gateway;
pub mod graphs;
pub(crate) mod leader;
pub mod relay;
pub mod runner;
pub mod webhooks;
