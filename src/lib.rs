//! milkcrate: deploy containerized apps from a web page.
//!
//! The binary (`src/main.rs`) only calls [`cli::run`]. See ARCHITECTURE.md for the map.

pub mod app;
pub mod archive;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod docker;
pub mod domain;
pub mod http_common;
pub mod router;
pub mod s3;
pub mod secrets;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;
pub mod web;
