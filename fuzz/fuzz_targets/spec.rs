//! The guest init's spec reader (`crates/isolate-init/src/spec.rs`,
//! compiled here as it is: the init is a binary with no library) and the
//! host's spec archive around it. Any bytes: parse or refuse, no panic; an
//! accepted spec holds what the init relies on (a program, absolute cwd
//! and volume targets), goes through the host's cpio spec archive and
//! comes back equal; the program lookup returns one of its candidates.

#![no_main]

use std::path::{Path, PathBuf};

use isolate_core::exec;
use isolate_core::protocol::SPEC_PATH;
use isolate_image::cpio::read;
use libfuzzer_sys::fuzz_target;

#[path = "../../crates/isolate-init/src/spec.rs"]
#[allow(dead_code)]
mod spec;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = spec::parse(data) else {
        return;
    };
    assert!(!s.argv.is_empty() && !s.argv[0].is_empty());
    assert!(s.cwd.starts_with('/'));
    assert!(s.volumes.iter().all(|v| v.target.starts_with('/')));

    // Host → initrd → init.
    let archive = isolate_image::spec_archive(&s);
    assert_eq!(archive.len() % 4, 0);
    let entries = read::parse(&archive);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["isolate", SPEC_PATH.trim_start_matches('/')]);
    let back = spec::parse(&entries[1].data).expect("the archived spec parses");
    assert_eq!(back, s);

    // Program lookup against a file system where the data decides what
    // exists: the result is the program itself (a path) or a candidate.
    let program = &s.argv[0];
    let path = exec::search_path(&s.env);
    let cwd = Path::new(&s.cwd);
    let candidates: Vec<PathBuf> = exec::candidates(program, path)
        .into_iter()
        .map(|p| cwd.join(p))
        .collect();
    let probe = |p: &Path| match p.as_os_str().len() % 3 {
        0 => spec::Candidate::Missing,
        1 => spec::Candidate::File,
        _ => spec::Candidate::Executable,
    };
    match spec::resolve(program, path, cwd, probe) {
        Ok(p) if program.contains('/') => assert_eq!(p, Path::new(program)),
        Ok(p) => assert!(candidates.contains(&p), "{p:?} is not a candidate"),
        Err(e) => {
            assert_eq!(e, isolate_core::ExecFailure::NotFound);
            assert!(candidates
                .iter()
                .all(|c| probe(c) == spec::Candidate::Missing));
        }
    }
});
