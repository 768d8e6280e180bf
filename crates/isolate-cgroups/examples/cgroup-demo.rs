//! Runs a command in a fresh isolate cgroup with limits, prints its stats,
//! then removes the cgroup. Needs root.
//!
//! ```text
//! cargo run -p isolate-cgroups --example cgroup-demo -- 64m 0.5 32 /bin/sh -c 'echo hi; sleep 1'
//! ```

use std::process::Command;

use isolate_cgroups::Cgroup;
use isolate_core::Limits;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: cgroup-demo MEMORY CPUS PIDS COMMAND [ARG...]");
        std::process::exit(2);
    }
    let limits = Limits {
        memory: Some(isolate_core::parse::size(&args[0])?),
        cpus: Some(args[1].parse()?),
        pids: Some(args[2].parse()?),
        io_weight: None,
    };
    println!("layout: {}", isolate_cgroups::layout()?);

    let cg = Cgroup::create(&format!("demo-{}", std::process::id()))?;
    let result = run(&cg, &limits, &args[3..]);
    // Remove on every path, then report the first error.
    let removed = cg.remove();
    result?;
    removed?;
    Ok(())
}

fn run(cg: &Cgroup, limits: &Limits, argv: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    cg.apply(limits)?;
    let mut child = Command::new(&argv[0]).args(&argv[1..]).spawn()?;
    // The child runs a little outside the cgroup before this: the container
    // backend avoids that with clone3(CLONE_INTO_CGROUP) or a start pipe.
    if let Err(e) = cg.add_process(child.id()) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e.into());
    }
    let status = child.wait()?;
    let stats = cg.stats()?;
    println!("{} {status}", cg.rel_path());
    println!("  cpu time     {:?}", stats.cpu_time);
    println!(
        "  memory peak  {:?} of {:?}",
        stats.memory_peak, stats.memory_limit
    );
    println!("  cpus limit   {:?}", stats.cpus_limit);
    println!("  pids limit   {:?}", stats.pids_limit);
    println!("  oom killed   {}", cg.oom_killed()?);
    Ok(())
}
