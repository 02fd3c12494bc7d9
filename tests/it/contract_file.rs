//! The config-source contract, run against the file source.

use crate::support::contract::{contract_suite, FileHarness};

contract_suite!(FileHarness::new);
