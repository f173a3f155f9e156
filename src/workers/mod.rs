//! What runs beside the API in a `serve` process: the relay (log →
//! RabbitMQ, [`relay`]), the runner ([`runner`]), the device gateway
//! ([`gateway`]), and the leader lock that keeps one relay and one gateway
//! active across processes.

pub mod gateway;
pub(crate) mod leader;
pub mod relay;
pub mod runner;
