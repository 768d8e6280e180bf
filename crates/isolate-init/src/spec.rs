//! Reading the [`GuestSpec`] and resolving the workload's program.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use isolate_core::exec;
use isolate_core::protocol::GuestSpec;
use isolate_core::ExecFailure;

/// Errors of reading the spec.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec file is missing or unreadable.
    #[error("cannot read {path} (the VMM must append the spec archive to the initrd)")]
    Read {
        /// The spec path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The spec is not a valid `GuestSpec`.
    #[error("invalid guest spec")]
    Parse(#[source] serde_json::Error),
    /// The spec is well-formed but unusable.
    #[error("invalid guest spec: {0}")]
    Invalid(&'static str),
}

/// Parses and checks a spec.
pub fn parse(bytes: &[u8]) -> Result<GuestSpec, Error> {
    let spec: GuestSpec = serde_json::from_slice(bytes).map_err(Error::Parse)?;
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return Err(Error::Invalid("argv is empty"));
    }
    if !spec.cwd.starts_with('/') {
        return Err(Error::Invalid("cwd is not an absolute path"));
    }
    if spec.volumes.iter().any(|v| !v.target.starts_with('/')) {
        return Err(Error::Invalid("a volume target is not an absolute path"));
    }
    Ok(spec)
}

/// Reads and parses the spec at `path`.
pub fn read(path: &Path) -> Result<GuestSpec, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&bytes)
}

/// What a candidate path is, as far as the lookup cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidate {
    /// Nothing there (or a directory).
    Missing,
    /// A regular file without any execute bit.
    File,
    /// A regular file with an execute bit.
    Executable,
}

/// Looks at `p` in the file system.
pub fn probe(p: &Path) -> Candidate {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Candidate::Executable,
        Ok(m) if m.is_file() => Candidate::File,
        _ => Candidate::Missing,
    }
}

/// Resolves the program to exec, as `execvp` would: a name with a `/` is
/// used as is (the exec reports what is wrong with it); otherwise, of the
/// paths [`exec::candidates`] lists for `path` (a relative one counts from
/// `cwd`, the workload's working directory), the first executable file,
/// else the first non-executable one (so the exec reports "not
/// executable"), else [`ExecFailure::NotFound`].
pub fn resolve(
    program: &str,
    path: &str,
    cwd: &Path,
    probe: impl Fn(&Path) -> Candidate,
) -> Result<PathBuf, ExecFailure> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let mut fallback = None;
    for p in exec::candidates(program, path) {
        let p = cwd.join(p);
        match probe(&p) {
            Candidate::Executable => return Ok(p),
            Candidate::File if fallback.is_none() => fallback = Some(p),
            _ => {}
        }
    }
    fallback.ok_or(ExecFailure::NotFound)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const SPEC: &str = r#"{"argv":["echo","hi"],"env":[["PATH","/bin"],["A","b"]],
        "cwd":"/","uid":0,"gid":0,"hostname":"box","root":"initramfs","read_only":false,
        "volumes":[{"device":"/dev/vdb","target":"/data","read_only":true,"fstype":"ext4"}],
        "memory_limit":134217728,"pids_limit":null,"loopback":true,"stdin":false}"#;

    #[test]
    fn parses_a_spec_as_the_host_writes_it() {
        let s = parse(SPEC.as_bytes()).unwrap();
        assert_eq!(s.argv, ["echo", "hi"]);
        assert_eq!(s.volumes[0].target, "/data");
        assert_eq!(s.memory_limit, Some(128 << 20));
        assert_eq!(exec::search_path(&s.env), "/bin");
    }

    #[test]
    fn parses_a_block_root() {
        let j = SPEC.replace(
            r#""root":"initramfs""#,
            r#""root":{"block":{"device":"/dev/vda","fstype":"erofs"}}"#,
        );
        let s = parse(j.as_bytes()).unwrap();
        assert!(matches!(
            s.root,
            isolate_core::protocol::GuestRoot::Block { ref fstype, .. } if fstype == "erofs"
        ));
    }

    #[test]
    fn rejects_empty_argv_and_relative_cwd() {
        let j = SPEC.replace(r#"["echo","hi"]"#, "[]");
        assert!(matches!(parse(j.as_bytes()), Err(Error::Invalid(_))));
        let j = SPEC.replace(r#""cwd":"/""#, r#""cwd":"tmp""#);
        assert!(matches!(parse(j.as_bytes()), Err(Error::Invalid(_))));
        assert!(matches!(parse(b"{"), Err(Error::Parse(_))));
    }

    fn fake(files: &[(&str, Candidate)]) -> impl Fn(&Path) -> Candidate {
        let m: HashMap<PathBuf, Candidate> =
            files.iter().map(|(p, c)| (PathBuf::from(p), *c)).collect();
        move |p| m.get(p).copied().unwrap_or(Candidate::Missing)
    }

    #[test]
    fn resolve_prefers_the_first_executable_match() {
        let fs = fake(&[
            ("/usr/bin/tool", Candidate::File),
            ("/bin/tool", Candidate::Executable),
        ]);
        assert_eq!(
            resolve("tool", "/usr/bin:/bin", Path::new("/"), &fs).unwrap(),
            Path::new("/bin/tool")
        );
    }

    #[test]
    fn resolve_falls_back_to_a_non_executable_file() {
        let fs = fake(&[("/usr/bin/tool", Candidate::File)]);
        assert_eq!(
            resolve("tool", "/usr/bin:/bin", Path::new("/"), &fs).unwrap(),
            Path::new("/usr/bin/tool")
        );
    }

    #[test]
    fn resolve_reports_not_found_and_keeps_slashed_names() {
        let fs = fake(&[]);
        assert_eq!(
            resolve("nope", "/bin::", Path::new("/"), &fs),
            Err(ExecFailure::NotFound)
        );
        assert_eq!(
            resolve("./x", "/bin", Path::new("/"), &fs).unwrap(),
            Path::new("./x")
        );
    }

    #[test]
    fn resolve_counts_relative_path_entries_from_the_working_directory() {
        let fs = fake(&[("/work/bin/tool", Candidate::Executable)]);
        assert_eq!(
            resolve("tool", "bin:/usr/bin", Path::new("/work"), &fs).unwrap(),
            Path::new("/work/bin/tool")
        );
    }

    #[test]
    fn probe_reads_modes_from_the_file_system() {
        let d = tempfile::tempdir().unwrap();
        let x = d.path().join("x");
        std::fs::write(&x, b"").unwrap();
        assert_eq!(probe(&x), Candidate::File);
        std::fs::set_permissions(&x, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(probe(&x), Candidate::Executable);
        assert_eq!(probe(d.path()), Candidate::Missing);
        assert_eq!(
            resolve("x", &d.path().display().to_string(), Path::new("/"), probe).unwrap(),
            x
        );
    }
}
