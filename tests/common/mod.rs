//! Shared integration-test harness (docs/design.md §9).
//!
//! Every integration test file uses it with `mod common;`. Not every test file uses every
//! helper, hence `dead_code` is allowed for the whole module.
#![allow(dead_code)]

pub mod binary;
pub mod client;
pub mod flood;
pub mod http;
pub mod mariadb;
pub mod metrics;
pub mod pki;
pub mod proxy;
pub mod raw;
