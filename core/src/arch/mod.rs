//! Machine-specific facts: register layouts and the instructions the engine plants.
//! Only x86_64 is supported.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use x86_64::*;

#[cfg(not(target_arch = "x86_64"))]
compile_error!("mrun's engine supports only x86_64 for now");
