//! OCI hooks that run in the runtime's namespaces: `prestart` and
//! `createRuntime` (at the end of `create`, once the container's
//! namespaces exist and before its process starts), `poststart` (after
//! `start`) and `poststop` (in `delete`). Each gets the container's state
//! JSON on stdin; a hook that fails or overruns its `timeout` fails
//! `create` or `start` (a `poststop` failure is only logged, as runc does).
//! `createContainer` and `startContainer`, which run inside the container,
//! are refused by the config mapping.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use crate::error::{OciError, Result};

/// Runs `hooks` (of kind `kind`) in order with `state` on their stdin.
pub fn run(kind: &str, hooks: &[Hook], state: &serde_json::Value) -> Result<()> {
    for (i, h) in hooks.iter().enumerate() {
        let what = format!("hooks.{kind}[{i}] ({})", h.path().display());
        let fail = |why: String| OciError::invalid(&what, why);
        let args = h.args().clone().unwrap_or_default();
        let mut cmd = Command::new(h.path());
        if let Some(arg0) = args.first() {
            cmd.arg0(arg0);
        }
        cmd.args(args.iter().skip(1))
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        for kv in h.env().as_deref().unwrap_or_default() {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| fail(format!("cannot start it: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A hook that does not read its stdin is not an error.
            let _ = stdin.write_all(state.to_string().as_bytes());
        }
        let limit = h
            .timeout()
            .filter(|&t| t > 0)
            .map(|t| Duration::from_secs(t as u64));
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) => {}
                Err(e) => return Err(fail(format!("cannot wait for it: {e}"))),
            }
            if limit.is_some_and(|l| start.elapsed() > l) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "it ran past its timeout of {:?}",
                    limit.unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if !status.success() {
            return Err(fail(format!("it failed ({status})")));
        }
    }
    Ok(())
}
