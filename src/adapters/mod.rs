//! What the service talks to, each named for it: RabbitMQ ([`rabbitmq`]),
//! the RockBLOCK web API ([`rockblock`]) and the content-addressed blob
//! directory ([`blobs`]). The Docker engine is the runner's executor
//! (`workers::runner::executor`).

pub mod blobs;
pub mod rabbitmq;
pub mod rockblock;
