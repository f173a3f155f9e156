//! What the service talks to, each named for it: RabbitMQ ([`rabbitmq`],
//! and [`rabbitmq_upgrade`] for queues of older releases),
//! the RockBLOCK web API ([`rockblock`]), the content-addressed blob
//! directory ([`blobs`]) and a Slurm cluster ([`slurm`], not yet an executor).
//! The Docker engine is the runner's executor (`workers::runner::executor`).

pub mod blobs;
pub mod rabbitmq;
pub mod rabbitmq_upgrade;
pub mod rockblock;
pub mod slurm;
