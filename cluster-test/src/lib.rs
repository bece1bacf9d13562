//! The harness for real multi-process JobServ clusters on one machine: start node and worker processes
//! on 127.0.0.1 with allocated ports, kill (SIGKILL) / stop (SIGTERM) / restart them on the same data dir,
//! and the scenarios and benchmarks built on that (`crash_loop`, `bench_node`).
pub mod artifacts;
pub mod backup;
pub mod bench;
pub mod bench_failover;
pub mod bench_node;
pub mod bench_triggers;
pub mod bench_ui;
pub mod bench_worker;
pub mod big_log;
pub mod chaos;
pub mod compose;
pub mod crash_loop;
pub mod fill;
pub mod harness;
pub mod history;
pub mod local_cluster;
pub mod proxy;
pub mod recorder;
pub mod rejoin;
pub mod retention_disk;
pub mod stats;
