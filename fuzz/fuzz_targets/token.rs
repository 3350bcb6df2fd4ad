#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/token.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::check_token(data));
