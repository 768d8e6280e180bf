//! The workload's seccomp policy: the backend's default (Docker's model:
//! deny what is not allowed), none, or a profile in the Docker / OCI
//! seccomp JSON format, as `--security-opt seccomp=...` gives it.
//!
//! This module only parses and checks a profile; the container backend
//! compiles it to BPF.
//!
//! ```
//! use isolate_core::{Seccomp, SeccompAction, SeccompProfile};
//!
//! let p = SeccompProfile::from_json(r#"{
//!     "defaultAction": "SCMP_ACT_ALLOW",
//!     "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
//! }"#)?;
//! assert_eq!(p.default_action, SeccompAction::Allow);
//! let policy = Seccomp::Profile(Box::new(p));
//! assert!(!policy.is_default());
//! # Ok::<(), isolate_core::Error>(())
//! ```

use std::path::Path;

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

/// The option name errors are reported under.
const FIELD: &str = "security-opt";

/// Largest errno a filter can return (the kernel's `MAX_ERRNO`).
pub const MAX_ERRNO: u32 = 4095;

/// Which seccomp filter the workload gets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Seccomp {
    /// The backend's default filter (container mode: Docker's default
    /// profile for the workload's capabilities, plus isolate's refusals).
    #[default]
    Default,
    /// No filter at all (`seccomp=unconfined`).
    Unconfined,
    /// A user's profile (`seccomp=FILE.json`).
    Profile(Box<SeccompProfile>),
}

impl Seccomp {
    /// Whether this is the backend's default.
    pub fn is_default(&self) -> bool {
        matches!(self, Seccomp::Default)
    }

    /// The value of `--security-opt seccomp=VALUE`: `unconfined`, or the
    /// path of a JSON profile, read and checked here.
    pub fn from_option_value(value: &str) -> Result<Seccomp> {
        match value {
            "unconfined" => Ok(Seccomp::Unconfined),
            "" => Err(Error::invalid(
                FIELD,
                "seccomp= needs a value: seccomp=unconfined or seccomp=FILE.json",
            )),
            path => Ok(Seccomp::Profile(Box::new(SeccompProfile::load(
                Path::new(path),
            )?))),
        }
    }

    /// Checks a profile (nothing to check for the others).
    pub fn validate(&self) -> Result<()> {
        match self {
            Seccomp::Profile(p) => p.validate(),
            _ => Ok(()),
        }
    }
}

/// What a matched rule (or the default) does, as the JSON names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SeccompAction {
    /// Let the call run.
    #[serde(rename = "SCMP_ACT_ALLOW")]
    Allow,
    /// Fail the call with `errnoRet` (default `EPERM`).
    #[serde(rename = "SCMP_ACT_ERRNO")]
    Errno,
    /// Kill the thread (libseccomp's old name for it).
    #[serde(rename = "SCMP_ACT_KILL")]
    Kill,
    /// Kill the thread.
    #[serde(rename = "SCMP_ACT_KILL_THREAD")]
    KillThread,
    /// Kill the whole process.
    #[serde(rename = "SCMP_ACT_KILL_PROCESS")]
    KillProcess,
    /// Send `SIGSYS`.
    #[serde(rename = "SCMP_ACT_TRAP")]
    Trap,
    /// Notify a ptrace tracer (`ENOSYS` without one).
    #[serde(rename = "SCMP_ACT_TRACE")]
    Trace,
    /// Let the call run and log it.
    #[serde(rename = "SCMP_ACT_LOG")]
    Log,
    /// Ask a user-space agent; not supported (isolate runs no agent).
    #[serde(rename = "SCMP_ACT_NOTIFY")]
    Notify,
}

/// How an argument is compared, as the JSON names it (libseccomp's
/// 64-bit comparisons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SeccompOp {
    /// `arg != value`
    #[serde(rename = "SCMP_CMP_NE")]
    NotEqual,
    /// `arg < value`
    #[serde(rename = "SCMP_CMP_LT")]
    LessThan,
    /// `arg <= value`
    #[serde(rename = "SCMP_CMP_LE")]
    LessOrEqual,
    /// `arg == value`
    #[serde(rename = "SCMP_CMP_EQ")]
    Equal,
    /// `arg >= value`
    #[serde(rename = "SCMP_CMP_GE")]
    GreaterOrEqual,
    /// `arg > value`
    #[serde(rename = "SCMP_CMP_GT")]
    GreaterThan,
    /// `arg & value == valueTwo`
    #[serde(rename = "SCMP_CMP_MASKED_EQ")]
    MaskedEqual,
}

/// A seccomp profile in the Docker / OCI JSON format. Fields isolate does
/// not use (`flags`, `comment`, ...) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompProfile {
    /// What calls no rule matches get.
    pub default_action: SeccompAction,
    /// The errno of an `SCMP_ACT_ERRNO` default (default `EPERM`).
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    /// `SCMP_ARCH_*` names (OCI); isolate filters the host's own
    /// architecture and kills calls of any other.
    #[serde(default, deserialize_with = "null_is_empty")]
    pub architectures: Vec<String>,
    /// Docker's form of `architectures`.
    #[serde(default, deserialize_with = "null_is_empty")]
    pub arch_map: Vec<SeccompArchMap>,
    /// The rules.
    #[serde(default, deserialize_with = "null_is_empty")]
    pub syscalls: Vec<SeccompSyscall>,
}

/// One `archMap` entry (Docker's format).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompArchMap {
    /// The main architecture.
    pub architecture: String,
    /// Architectures whose calls the same rules cover.
    #[serde(default, deserialize_with = "null_is_empty")]
    pub sub_architectures: Vec<String>,
}

/// One rule: calls by name, an action, and argument conditions that must
/// all hold.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompSyscall {
    /// System call names; names the host does not know are skipped (as
    /// runc does).
    #[serde(default, deserialize_with = "null_is_empty")]
    pub names: Vec<String>,
    /// One name (Docker's older format).
    #[serde(default)]
    pub name: Option<String>,
    /// What a matching call gets.
    pub action: SeccompAction,
    /// The errno of `SCMP_ACT_ERRNO` (default `EPERM`).
    #[serde(default)]
    pub errno_ret: Option<u32>,
    /// Conditions on the arguments, all of which must hold.
    #[serde(default, deserialize_with = "null_is_empty")]
    pub args: Vec<SeccompArg>,
    /// The rule applies only when all of these hold (Docker's format).
    #[serde(default)]
    pub includes: Option<SeccompFilter>,
    /// The rule does not apply when any of these holds (Docker's format).
    #[serde(default)]
    pub excludes: Option<SeccompFilter>,
}

/// A condition on one argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompArg {
    /// Which argument, 0 to 5.
    pub index: u32,
    /// The value compared with (the mask for `SCMP_CMP_MASKED_EQ`).
    pub value: u64,
    /// The masked value for `SCMP_CMP_MASKED_EQ`.
    #[serde(default)]
    pub value_two: u64,
    /// The comparison.
    pub op: SeccompOp,
}

/// Docker's `includes` / `excludes` of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompFilter {
    /// Capability names (`CAP_SYS_ADMIN`), held by the workload.
    #[serde(default, deserialize_with = "null_is_empty")]
    pub caps: Vec<String>,
    /// Architectures in Go's names (`amd64`, `arm64`, `x86`, ...).
    #[serde(default, deserialize_with = "null_is_empty")]
    pub arches: Vec<String>,
    /// Lowest host kernel, `MAJOR.MINOR`.
    #[serde(default)]
    pub min_kernel: Option<String>,
}

impl SeccompSyscall {
    /// Every name of the rule (`names` and the older `name`).
    pub fn all_names(&self) -> impl Iterator<Item = &str> {
        self.names
            .iter()
            .map(String::as_str)
            .chain(self.name.as_deref())
    }
}

impl SeccompFilter {
    /// The `minKernel` as `(major, minor)`.
    pub fn min_kernel(&self) -> Result<Option<(u32, u32)>> {
        let Some(v) = &self.min_kernel else {
            return Ok(None);
        };
        parse_kernel_version(v).map(Some).ok_or_else(|| {
            Error::invalid(
                FIELD,
                format!("seccomp profile: minKernel {v:?} is not a version like \"4.8\""),
            )
        })
    }
}

/// `MAJOR.MINOR[.anything]` of a kernel release.
pub fn parse_kernel_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Deserializes a JSON `null` as an empty list (Docker writes both).
fn null_is_empty<'de, D, T>(d: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

impl SeccompProfile {
    /// Reads and checks a profile file.
    pub fn load(path: &Path) -> Result<SeccompProfile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io("cannot read the seccomp profile", path, e))?;
        SeccompProfile::from_json(&text).map_err(|e| match e {
            Error::Invalid { field, reason } => Error::Invalid {
                field,
                reason: format!("{}: {reason}", path.display()),
            },
            other => other,
        })
    }

    /// Parses and checks a profile.
    pub fn from_json(text: &str) -> Result<SeccompProfile> {
        let p: SeccompProfile = serde_json::from_str(text).map_err(|e| {
            Error::invalid(
                FIELD,
                format!("not a seccomp profile (Docker/OCI JSON): {e}"),
            )
        })?;
        p.validate()?;
        Ok(p)
    }

    /// Checks what serde cannot: supported actions, argument indexes,
    /// errno ranges, names present. The error names the rule.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Error::invalid(FIELD, format!("seccomp profile: {what}"));
        check_action("defaultAction", self.default_action).map_err(bad)?;
        check_errno("defaultErrnoRet", self.default_errno_ret).map_err(bad)?;
        for (i, s) in self.syscalls.iter().enumerate() {
            let first = s.all_names().next();
            let at = match first {
                Some(n) => format!("syscalls[{i}] ({n})"),
                None => return Err(bad(format!("syscalls[{i}] names no system call"))),
            };
            check_action(&at, s.action).map_err(bad)?;
            check_errno(&at, s.errno_ret).map_err(bad)?;
            for a in &s.args {
                if a.index > 5 {
                    return Err(bad(format!(
                        "{at}: argument index {} is out of range (0 to 5)",
                        a.index
                    )));
                }
            }
            for f in [&s.includes, &s.excludes].into_iter().flatten() {
                f.min_kernel()?;
            }
        }
        Ok(())
    }
}

fn check_action(at: &str, a: SeccompAction) -> std::result::Result<(), String> {
    match a {
        SeccompAction::Notify => Err(format!(
            "{at}: action SCMP_ACT_NOTIFY is not supported (isolate runs no seccomp agent); use SCMP_ACT_ERRNO, SCMP_ACT_ALLOW, SCMP_ACT_LOG, SCMP_ACT_TRAP, SCMP_ACT_TRACE or SCMP_ACT_KILL*"
        )),
        _ => Ok(()),
    }
}

fn check_errno(at: &str, e: Option<u32>) -> std::result::Result<(), String> {
    match e {
        Some(n) if n > MAX_ERRNO => Err(format!(
            "{at}: errno {n} is out of range (0 to {MAX_ERRNO})"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(e: Error) -> String {
        match e {
            Error::Invalid { field, reason } => {
                assert_eq!(field, FIELD);
                reason
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn parses_oci_and_docker_forms() {
        let p = SeccompProfile::from_json(
            r#"{
              "defaultAction": "SCMP_ACT_ERRNO",
              "defaultErrnoRet": 38,
              "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": null}],
              "architectures": ["SCMP_ARCH_X86_64"],
              "flags": ["SECCOMP_FILTER_FLAG_LOG"],
              "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "args": null},
                {"name": "socket", "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
                 "excludes": {"caps": ["CAP_SYS_ADMIN"]}, "includes": {"minKernel": "4.8"}}
              ]
            }"#,
        )
        .unwrap();
        assert_eq!(p.default_errno_ret, Some(38));
        assert_eq!(p.syscalls.len(), 3);
        assert!(p.syscalls[0].args.is_empty());
        assert_eq!(p.syscalls[1].all_names().collect::<Vec<_>>(), ["socket"]);
        assert_eq!(p.syscalls[2].args[0].op, SeccompOp::MaskedEqual);
        assert_eq!(
            p.syscalls[2]
                .includes
                .as_ref()
                .unwrap()
                .min_kernel()
                .unwrap(),
            Some((4, 8))
        );
    }

    #[test]
    fn rejects_unknown_action_with_its_place() {
        let e = SeccompProfile::from_json(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_FOO"}]}"#,
        )
        .unwrap_err();
        let r = reason(e);
        assert!(r.contains("SCMP_ACT_FOO") && r.contains("line"), "{r}");
    }

    #[test]
    fn rejects_notify_and_bad_indexes() {
        let r = reason(
            SeccompProfile::from_json(
                r#"{"defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]}"#,
            )
            .unwrap_err(),
        );
        assert!(
            r.contains("syscalls[0] (mount)") && r.contains("NOTIFY"),
            "{r}"
        );
        let r = reason(
            SeccompProfile::from_json(
                r#"{"defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{"names": ["ioctl"], "action": "SCMP_ACT_ERRNO",
                      "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#,
            )
            .unwrap_err(),
        );
        assert!(r.contains("argument index 6"), "{r}");
        let r = reason(
            SeccompProfile::from_json(
                r#"{"defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "errnoRet": 70000}]}"#,
            )
            .unwrap_err(),
        );
        assert!(r.contains("errno 70000"), "{r}");
    }

    #[test]
    fn rejects_bad_op_missing_names_and_non_json() {
        let r = reason(
            SeccompProfile::from_json(
                r#"{"defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{"names": ["ioctl"], "action": "SCMP_ACT_ERRNO",
                      "args": [{"index": 1, "value": 1, "op": "SCMP_CMP_SORTA"}]}]}"#,
            )
            .unwrap_err(),
        );
        assert!(r.contains("SCMP_CMP_SORTA"), "{r}");
        let r = reason(
            SeccompProfile::from_json(
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ERRNO"}]}"#,
            )
            .unwrap_err(),
        );
        assert!(r.contains("names no system call"), "{r}");
        let r = reason(SeccompProfile::from_json("not json").unwrap_err());
        assert!(r.contains("not a seccomp profile"), "{r}");
        let r = reason(SeccompProfile::from_json("{}").unwrap_err());
        assert!(r.contains("defaultAction"), "{r}");
    }

    #[test]
    fn option_values() {
        assert_eq!(
            Seccomp::from_option_value("unconfined").unwrap(),
            Seccomp::Unconfined
        );
        assert!(Seccomp::from_option_value("").is_err());
        let e = Seccomp::from_option_value("/nonexistent/profile.json").unwrap_err();
        assert!(e.chain().contains("/nonexistent/profile.json"), "{e}");
        assert_eq!(e.exit_code(), 125);
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.1.0-27-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel_version("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel_version("four"), None);
    }
}
