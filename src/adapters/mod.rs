//! What the service talks to, each named for it: RabbitMQ ([`rabbitmq`]),
//! the RockBLOCK web API ([`rockblock`]), the content-addressed blob
//! directory ([`blobs`]) and a Slurm cluster ([`slurm`], not yet an executor).
//! The Docker engine is the runner's executor (`workers::runner::executor`).

pub mod blobs;
pub mod rabbitmq;
pub mod rockblock;
pub mod slurm;
