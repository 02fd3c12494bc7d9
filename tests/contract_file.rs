//! The config-source contract, run against the file source.

mod support;

use support::contract::FileHarness;

contract_suite!(FileHarness::new);
