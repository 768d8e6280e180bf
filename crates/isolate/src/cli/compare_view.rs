//! `isolate compare`: runs both modes and shows the table, JSON or a plot.

use std::io::Write;
use std::path::Path;

use isolate::compare::{Comparison, ModeReport, Spread};
use isolate::{Error, Mode, Result};

use super::args::CompareArgs;

pub fn compare(args: CompareArgs) -> Result<i32> {
    let w = super::workload(&args.opts, &args.command)?;
    let modes: Vec<Mode> = if args.mode.is_empty() {
        vec![Mode::Container, Mode::Vm]
    } else {
        args.mode.iter().map(|&m| m.into()).collect()
    };
    // SAFETY: isatty only inspects file descriptor 2, which stays open.
    let tty = unsafe { libc::isatty(2) } == 1;
    let quiet = args.json || !tty;
    let c = isolate::compare::compare(&w, &modes, args.runs, |mode, done, total| {
        if !quiet {
            let what = if done == 0 {
                "warm-up".to_string()
            } else {
                format!("run {done}/{total}")
            };
            eprint!("\r\x1b[2Kisolate compare: {mode} {what}");
            let _ = std::io::stderr().flush();
        }
    })?;
    if !quiet {
        eprint!("\r\x1b[2K");
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&c).expect("comparison serializes")
        );
    } else {
        print_table(&c);
    }
    if let Some(path) = &args.plot {
        plot(&c, path)?;
        if !args.json {
            println!("plot written to {}", path.display());
        }
    }
    let failed = c.modes.iter().any(|m| m.error.is_some());
    Ok(if failed { 1 } else { 0 })
}

fn ms(s: Option<Spread>, p95: bool) -> String {
    s.map_or("-".into(), |s| {
        format!("{:.1} ms", if p95 { s.p95 } else { s.median })
    })
}

fn num(v: Option<f64>, unit: &str) -> String {
    v.map_or("-".into(), |v| format!("{v:.1} {unit}"))
}

fn print_table(c: &Comparison) {
    println!(
        "isolate compare: {} — {} run(s) per mode after a warm-up",
        shell_words(&c.argv),
        c.runs
    );
    let ran: Vec<&ModeReport> = c.modes.iter().filter(|m| !m.samples.is_empty()).collect();
    if !ran.is_empty() {
        let row = |label: &str, f: &dyn Fn(&ModeReport) -> String| {
            print!("  {label:<26}");
            for m in &ran {
                print!("{:>16}", f(m));
            }
            println!();
        };
        row("", &|m| m.mode.to_string());
        row("start-up, median", &|m| ms(m.startup_ms, false));
        row("start-up, p95", &|m| ms(m.startup_ms, true));
        row("to exit, median", &|m| ms(m.wall_ms, false));
        row("to exit, p95", &|m| ms(m.wall_ms, true));
        row("host memory overhead", &|m| num(m.host_overhead_mib, "MiB"));
        row("guest memory touched", &|m| num(m.guest_touched_mib, "MiB"));
        row("workload peak memory", &|m| num(m.peak_memory_mib, "MiB"));
        row("CPU time", &|m| num(m.cpu_ms, "ms"));
        row("exit code", &|m| {
            m.exit_code.map_or("-".into(), |c| c.to_string())
        });
        row("same in every run", &|m| {
            if m.consistent {
                "yes".into()
            } else {
                "NO".into()
            }
        });
        if ran.len() > 1 {
            println!(
                "  exit status parity: {}; output parity: {}",
                if c.exit_parity { "yes" } else { "NO" },
                if c.output_parity { "yes" } else { "NO" }
            );
        }
    }
    for m in &c.modes {
        if let Some(why) = &m.unavailable {
            println!("  {}: not run here: {why}", m.mode);
            if m.mode == Mode::Vm {
                println!("  {}: to measure VM mode on this host, run it in the emulated KVM host: tests/emulated-host/compare.sh", m.mode);
            }
        }
        if let Some(err) = &m.error {
            println!("  {}: a run failed: {err}", m.mode);
        }
    }
}

fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/-_.=:".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Draws start-up and exit latency of every run, per mode, to an SVG.
fn plot(c: &Comparison, path: &Path) -> Result<()> {
    use plotters::prelude::*;

    let series: Vec<(String, Vec<f64>)> = c
        .modes
        .iter()
        .flat_map(|m| {
            let mut v = Vec::new();
            let wall: Vec<f64> = m
                .samples
                .iter()
                .map(|s| s.outcome.wall_time.as_secs_f64() * 1e3)
                .collect();
            let start: Vec<f64> = m
                .samples
                .iter()
                .filter_map(|s| s.outcome.startup_time.map(|d| d.as_secs_f64() * 1e3))
                .collect();
            if !wall.is_empty() {
                v.push((format!("{} to exit", m.mode), wall));
            }
            if !start.is_empty() {
                v.push((format!("{} start-up", m.mode), start));
            }
            v
        })
        .collect();
    if series.is_empty() {
        return Err(Error::Unsupported("no runs to plot".into()));
    }
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1.0);
    let n = series.iter().map(|(_, v)| v.len()).max().unwrap_or(1);
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("isolate compare: {}", shell_words(&c.argv)),
                ("sans-serif", 20),
            )
            .margin(20)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.5f64..(n as f64 + 0.5), 0f64..(max * 1.1))?;
        chart
            .configure_mesh()
            .x_desc("run")
            .y_desc("milliseconds")
            .draw()?;
        let colors = [&BLUE, &RED, &GREEN, &MAGENTA];
        for (i, (label, values)) in series.iter().enumerate() {
            let color = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(
                    values.iter().enumerate().map(|(j, v)| (j as f64 + 1.0, *v)),
                    color,
                ))?
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart.draw_series(
                values
                    .iter()
                    .enumerate()
                    .map(|(j, v)| Circle::new((j as f64 + 1.0, *v), 3, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw()
        .map_err(|e| Error::Unsupported(format!("cannot draw the plot to {}: {e}", path.display())))
}
