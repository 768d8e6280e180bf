//! Writes a bootable initrd: the cached root archive of a rootfs (with the
//! guest init as `/init`) followed by a spec archive.
//!
//! ```text
//! cargo run -p isolate-image --example make-initrd -- \
//!     [--rootfs DIR] [--init FILE] [--cache DIR] [--block DEVICE] --spec-json FILE OUT
//! ```
//!
//! With `--block DEVICE` (e.g. `/dev/vda`) the rootfs goes into a cached
//! block image instead, whose path is printed on stdout; the initrd then
//! holds only the init, and the spec's root is set to that device.
//!
//! `--rootfs` and `--init` default to the installed assets
//! (`ISOLATE_ROOTFS`/`ISOLATE_INIT`, then `ISOLATE_HOME`); `--cache` to
//! `${ISOLATE_HOME}/images`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use isolate_core::protocol::{GuestRoot, GuestSpec};
use isolate_image::Cache;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = e.source();
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("make-initrd: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut rootfs = None;
    let mut init = None;
    let mut cache = None;
    let mut spec_json = None;
    let mut out = None;
    let mut block = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--rootfs" => rootfs = Some(PathBuf::from(value()?)),
            "--init" => init = Some(PathBuf::from(value()?)),
            "--cache" => cache = Some(PathBuf::from(value()?)),
            "--block" => block = Some(value()?),
            "--spec-json" => spec_json = Some(PathBuf::from(value()?)),
            _ if a.starts_with("--") => return Err(format!("unknown option {a}").into()),
            _ => out = Some(PathBuf::from(a)),
        }
    }
    let spec_json = spec_json.ok_or("--spec-json FILE is required")?;
    let out = out.ok_or("the output file is required")?;
    let rootfs = isolate_core::paths::rootfs(rootfs.as_deref())?;
    let init = isolate_core::paths::init(init.as_deref())?;
    let cache = cache.map(Cache::at).unwrap_or_else(Cache::default_location);

    let mut spec: GuestSpec = serde_json::from_slice(
        &std::fs::read(&spec_json).map_err(|e| format!("{}: {e}", spec_json.display()))?,
    )
    .map_err(|e| format!("{} is not a GuestSpec: {e}", spec_json.display()))?;

    let t = Instant::now();
    let root = match block {
        None => cache.root_initramfs(&rootfs, &init)?,
        Some(device) => {
            let img = cache.block_image(&rootfs)?;
            println!("{}", img.path.display());
            spec.root = GuestRoot::Block {
                device,
                fstype: img.fstype.to_string(),
            };
            cache.init_only_initramfs(&init)?
        }
    };
    let took = t.elapsed();
    let mut initrd = std::fs::read(&root)?;
    initrd.extend(isolate_image::spec_archive(&spec));
    std::fs::write(&out, &initrd).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!(
        "make-initrd: root archive {} ({} bytes, {:.1} ms), initrd {} ({} bytes)",
        root.display(),
        std::fs::metadata(&root)?.len(),
        took.as_secs_f64() * 1000.0,
        out.display(),
        initrd.len()
    );
    Ok(())
}
