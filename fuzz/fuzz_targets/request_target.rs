#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/request_target.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::check_request_target(data));
