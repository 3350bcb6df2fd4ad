pub mod castellan;
pub mod http;
pub mod leak;
pub mod peers;
