//! kafscale: a Kafka-compatible streaming spine whose log lives in S3.
//!
//! This library holds what the `kafscale` binary is made of; the storage
//! pieces it builds on are the `kafscale-codec`, `kafscale-s3` and
//! `kafscale-shard` crates.

// The unsafe code the data plane needs (sockets, io_uring set-up,
// allocator tunables) stays in `kafscale-shard`, each use with its SAFETY line.
#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod broker;
pub mod internal;
pub mod meta;
pub mod mirror;
pub mod offset_history;
pub mod rest_client;
pub mod restore;
pub mod segments;
