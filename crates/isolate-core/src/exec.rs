//! Finding the program a workload runs, the same way in both modes: the
//! default `PATH` and the list of paths `execvp` would try.

use std::path::{Path, PathBuf};

/// `PATH` when the workload's environment sets none (the default of
/// container runtimes).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The value of `PATH` in `env` (the last one, as the environment the
/// workload sees keeps it), or [`DEFAULT_PATH`].
pub fn search_path(env: &[(String, String)]) -> &str {
    env.iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str())
}

/// The paths `execvp` tries for `program`, in order: `program` itself if
/// it holds a `/`, else `program` in each non-empty directory of `path`
/// (a relative directory counts from the working directory, as for
/// `execvp`).
pub fn candidates(program: &str, path: &str) -> Vec<PathBuf> {
    if program.contains('/') {
        return vec![PathBuf::from(program)];
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_when_env_has_none() {
        assert_eq!(search_path(&[]), DEFAULT_PATH);
        let env = [
            ("PATH".to_string(), "/a".to_string()),
            ("PATH".to_string(), "/b".to_string()),
        ];
        assert_eq!(search_path(&env), "/b");
    }

    #[test]
    fn program_with_a_slash_is_tried_as_given() {
        assert_eq!(candidates("./run.sh", "/bin"), [Path::new("./run.sh")]);
    }

    #[test]
    fn bare_program_is_tried_in_each_directory_of_path() {
        assert_eq!(
            candidates("tool", "/opt/bin::/usr/bin/:sbin"),
            [
                Path::new("/opt/bin/tool"),
                Path::new("/usr/bin/tool"),
                Path::new("sbin/tool")
            ]
        );
        assert!(candidates("tool", "").is_empty());
    }
}
