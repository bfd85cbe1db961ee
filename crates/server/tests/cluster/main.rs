//! Cluster behaviour under faults, with every peer in this test process (`harness`): one
//! module per event, each with realistic data (1536-d vectors, KB payloads).

mod harness;

mod abandoned_clients;
mod anti_entropy;
mod config_update;
mod kill_restart;
mod partition;
mod reads;
mod replicate;
mod snapshot_recovery;
