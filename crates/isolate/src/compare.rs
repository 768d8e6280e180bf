//! Runs the same workload under both boundaries, several times each, and
//! summarises what each costs: start-up latency, wall time, host memory
//! overhead, peak memory, CPU time, and whether exit status and output agree.

use std::io::Read;
use std::time::Duration;

use isolate_core::{Error, Mode, Outcome, Result, Stdio, Workload};

/// One run's measurements.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    /// The outcome (timings and memory included).
    pub outcome: Outcome,
    /// What the workload printed on stdout.
    pub stdout: String,
}

/// Median and 95th percentile.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Spread {
    /// Median.
    pub median: f64,
    /// 95th percentile (nearest rank).
    pub p95: f64,
}

impl Spread {
    /// The spread of `values`, or `None` if there are none.
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let median = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        let rank = ((0.95 * v.len() as f64).ceil() as usize).clamp(1, v.len());
        Some(Spread {
            median,
            p95: v[rank - 1],
        })
    }
}

/// One mode's results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModeReport {
    /// The mode.
    pub mode: Mode,
    /// Why the mode could not run here, if it could not.
    pub unavailable: Option<String>,
    /// Error of a run that failed, if one did (the mode's remaining runs stop).
    pub error: Option<String>,
    /// The measured runs (after the warm-up).
    pub samples: Vec<Sample>,
    /// Milliseconds from spawn to the workload's first instruction.
    pub startup_ms: Option<Spread>,
    /// Milliseconds from spawn to exit.
    pub wall_ms: Option<Spread>,
    /// Host memory overhead, MiB (median).
    pub host_overhead_mib: Option<f64>,
    /// Guest memory touched, MiB (median; VM mode).
    pub guest_touched_mib: Option<f64>,
    /// Peak memory of the workload, MiB (median).
    pub peak_memory_mib: Option<f64>,
    /// CPU time, ms (median).
    pub cpu_ms: Option<f64>,
    /// Exit code of the runs (the first one; see `consistent`).
    pub exit_code: Option<i32>,
    /// Whether every run had the same exit code and output.
    pub consistent: bool,
}

/// The comparison of both modes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    /// The command compared.
    pub argv: Vec<String>,
    /// Measured runs per mode.
    pub runs: usize,
    /// One report per mode.
    pub modes: Vec<ModeReport>,
    /// Whether the modes that ran agree on exit code.
    pub exit_parity: bool,
    /// Whether the modes that ran agree on stdout.
    pub output_parity: bool,
}

fn run_once(backend: &dyn isolate_core::Isolator, w: &Workload) -> Result<Sample> {
    let running = backend.spawn(w)?;
    let mut out = running.take_stdout();
    let mut err = running.take_stderr();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(f) = out.as_mut() {
            let _ = f.read_to_end(&mut s);
        }
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(f) = err.as_mut() {
            let _ = f.read_to_end(&mut s);
        }
    });
    let outcome = running.wait();
    let stdout = reader.join().unwrap_or_default();
    let _ = err_reader.join();
    Ok(Sample {
        outcome: outcome?,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
    })
}

fn median_of(samples: &[Sample], f: impl Fn(&Outcome) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = samples.iter().filter_map(|s| f(&s.outcome)).collect();
    Spread::of(&v).map(|s| s.median)
}

const MIB: f64 = 1048576.0;

/// Runs `workload` `runs` times under each mode in `modes` (after one
/// warm-up run each) and reports. `progress(mode, done, total)` is called
/// after each run. A mode this host cannot run is reported as unavailable,
/// with the reason, and the others still run.
pub fn compare(
    workload: &Workload,
    modes: &[Mode],
    runs: usize,
    mut progress: impl FnMut(Mode, usize, usize),
) -> Result<Comparison> {
    if runs == 0 {
        return Err(Error::invalid("runs", "give at least one run"));
    }
    workload.validate()?;
    let mut w = workload.clone();
    w.stdin(Stdio::Null)
        .stdout(Stdio::Piped)
        .stderr(Stdio::Piped);
    w.name = None;
    let mut reports = Vec::new();
    for &mode in modes {
        let mut report = ModeReport {
            mode,
            unavailable: None,
            error: None,
            samples: Vec::new(),
            startup_ms: None,
            wall_ms: None,
            host_overhead_mib: None,
            guest_touched_mib: None,
            peak_memory_mib: None,
            cpu_ms: None,
            exit_code: None,
            consistent: true,
        };
        let backend = match crate::isolator(mode).and_then(|b| b.check_host().map(|()| b)) {
            Ok(b) => b,
            Err(e) => {
                report.unavailable = Some(e.chain());
                reports.push(report);
                continue;
            }
        };
        for i in 0..=runs {
            match run_once(backend.as_ref(), &w) {
                Ok(s) if i > 0 => report.samples.push(s),
                Ok(_) => {}
                Err(e) => {
                    report.error = Some(e.chain());
                    break;
                }
            }
            progress(mode, i, runs);
        }
        let s = &report.samples;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        report.startup_ms = Spread::of(
            &s.iter()
                .filter_map(|x| x.outcome.startup_time.map(ms))
                .collect::<Vec<_>>(),
        );
        report.wall_ms = Spread::of(
            &s.iter()
                .map(|x| ms(x.outcome.wall_time))
                .collect::<Vec<_>>(),
        );
        report.host_overhead_mib = median_of(s, |o| o.host_overhead.map(|b| b as f64 / MIB));
        report.guest_touched_mib = median_of(s, |o| o.guest_memory_touched.map(|b| b as f64 / MIB));
        report.peak_memory_mib = median_of(s, |o| o.peak_memory.map(|b| b as f64 / MIB));
        report.cpu_ms = median_of(s, |o| o.cpu_time.map(ms));
        report.exit_code = s.first().map(|x| x.outcome.exit_code());
        report.consistent = s.windows(2).all(|p| {
            p[0].outcome.exit_code() == p[1].outcome.exit_code() && p[0].stdout == p[1].stdout
        });
        reports.push(report);
    }
    let ran: Vec<&ModeReport> = reports.iter().filter(|r| !r.samples.is_empty()).collect();
    let exit_parity = ran.windows(2).all(|p| p[0].exit_code == p[1].exit_code);
    let output_parity = ran
        .windows(2)
        .all(|p| p[0].samples[0].stdout == p[1].samples[0].stdout);
    Ok(Comparison {
        argv: workload.argv.clone(),
        runs,
        modes: reports,
        exit_parity,
        output_parity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_median_and_p95() {
        let s = Spread::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!(s.median, 3.0);
        assert_eq!(s.p95, 5.0);
        let s = Spread::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(s.median, 2.5);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(Spread::of(&v).unwrap().p95, 95.0);
        assert!(Spread::of(&[]).is_none());
    }
}
