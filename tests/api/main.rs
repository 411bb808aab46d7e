//! One integration-test binary: the app on port 0, real Redis servers started per test.

mod helpers;

mod api;
mod budgets;
mod faults;
mod hardening;
mod load;
mod operations;
mod pages;
mod payments;
mod properties;
mod redis_reads;
mod scale;
mod store_conformance;
