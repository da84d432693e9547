//! What a machine must share with the image's source: architecture, xsave layout and the exact
//! vDSO (whose code the restored process keeps calling into).

use super::error::{Context, EngineError, Result};
use crate::arch;
use crate::image::model::Compat;
use crate::resource::mem::is_special_name;

/// This machine's compatibility facts. `xstate_size` is filled by the caller that has one.
pub fn local(xstate_size: u32) -> Result<Compat> {
    let maps =
        std::fs::read_to_string("/proc/self/maps").ctx(|| "reading /proc/self/maps".into())?;
    let mut special_layout = Vec::new();
    let mut vdso_range = None;
    for line in maps.lines() {
        let mut cols = line.split_whitespace();
        let (Some(range), Some(name)) = (cols.next(), cols.nth(4)) else {
            continue;
        };
        if !is_special_name(name) {
            continue;
        }
        let Some((s, e)) = range.split_once('-') else {
            continue;
        };
        let (Ok(s), Ok(e)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16)) else {
            continue;
        };
        special_layout.push((name.to_string(), e - s));
        if name == "[vdso]" {
            vdso_range = Some((s, e));
        }
    }
    let vdso = match vdso_range {
        Some((s, e)) => {
            let mut buf = vec![0u8; (e - s) as usize];
            crate::sys::memory::read(nix::unistd::getpid(), s, &mut buf)
                .ctx(|| "reading this process's vDSO".into())?;
            buf
        }
        None => Vec::new(),
    };
    Ok(Compat {
        arch: std::env::consts::ARCH.to_string(),
        xfeatures: arch::local_xfeatures(),
        xstate_size,
        kernel_release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        special_layout,
        vdso,
    })
}

/// Refuse an image this machine cannot run, with a sentence saying what differs.
pub fn check(image: &Compat, here: &Compat) -> Result<()> {
    let differs = |what: String| {
        Err(EngineError::Incompatible(format!(
            "the image is incompatible with this machine: {what}; restore it on a machine like the one it was taken on"
        )))
    };
    if image.arch != here.arch {
        return differs(format!(
            "it is for {} and this machine is {}",
            image.arch, here.arch
        ));
    }
    if image.xfeatures != here.xfeatures {
        return differs(format!(
            "its CPU register state (xsave features {:#x}) differs from this CPU's ({:#x})",
            image.xfeatures, here.xfeatures
        ));
    }
    if image.special_layout != here.special_layout || image.vdso != here.vdso {
        return differs(format!(
            "its kernel's vDSO (kernel {}) differs from this kernel's ({})",
            image.kernel_release, here.kernel_release
        ));
    }
    Ok(())
}
