//! Integration tests: the real server on a real socket, a real Docker Engine, real files.
//! One binary (faster to link); `helpers` starts apps and speaks to them like a browser would.

mod acme;
mod attacks;
mod audit;
mod auth;
mod backups;
mod binary;
mod browser;
mod cli;
mod compose;
mod csrf;
mod dashboard;
mod deploy;
mod deploy_files;
mod docker_env;
mod engine;
mod envelope;
mod faults;
mod helpers;
mod hostile_zips;
mod https;
mod limits;
mod logging;
mod reconcile;
mod routing;
mod shutdown;
mod spool;
mod stats;
mod store;
mod volumes;
mod webdriver;
