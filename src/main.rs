//! The `scalpel` command line: a thin layer over the library. Each subcommand lives in its
//! own file under `src/cli/` and only parses arguments, calls the library and prints.

mod cli;

use std::io::Write;

use clap::{CommandFactory, FromArgMatches};
use scalpel::formats::io::remove_live_temps;

fn main() {
    pin_thread_count();
    keep_freed_memory();
    handle_signals();
    let matches = cli::Cli::command()
        .try_get_matches()
        .unwrap_or_else(|e| usage_error(e));
    let args = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| usage_error(e));
    if let Err(err) = on_the_pool(|| cli::run(args, &matches)) {
        // One line, with the whole context chain ("what: where: why"), and a non-zero exit.
        // Some library errors (candle's) append a backtrace after a newline: keep line one.
        let chain: Vec<String> = err
            .chain()
            .map(|e| {
                e.to_string()
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .collect();
        eprintln!("error: {}", chain.join(": "));
        std::process::exit(1);
    }
}

/// Runs `f` on a thread of rayon's global pool instead of the main thread. A parallel
/// operation started outside the pool hands its work to the pool and puts the caller to sleep
/// until it is done, two futex round trips per call; single-stream generation makes a few
/// hundred such calls per token. Started from a worker, the caller does its share of the work
/// and the other workers are often still spinning from the last call. The pool's threads get
/// the main thread's 8 MiB stack.
fn on_the_pool<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    // Fails only when a global pool already exists (nothing has started one yet here); the
    // run then goes on with that pool.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(8 << 20)
        .build_global();
    rayon::scope(|_| f())
}

/// Sets `RAYON_NUM_THREADS` to this machine's thread count when the user has not set it,
/// before any thread starts. Without it, candle asks `num_cpus` for the physical core
/// count on every CPU matmul (the attention products, two per layer and token), which
/// reads and parses `/proc/cpuinfo` each time: 8 % of an AVX2 generation's samples, and
/// single-stream generation measured about 52 against 67 tok/s with it set. rayon's
/// own default is the same count, so our kernels' threads do not change.
fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        if let Ok(n) = std::thread::available_parallelism() {
            std::env::set_var("RAYON_NUM_THREADS", n.get().to_string());
        }
    }
}

/// Lets glibc's malloc serve allocations of up to 1 GiB from its heap and keep freed memory
/// (up to 1 GiB) for reuse, instead of mapping fresh pages for every large tensor and
/// unmapping them on free. A forward pass over many tokens allocates and frees tensors of
/// tens to hundreds of MiB per layer (and the GEMM path widens every matrix into one), and
/// each fresh mapping is paid again in page faults and zeroing: WikiText-2 perplexity over
/// 8 windows measured 41 s with glibc's defaults and 27 s with this (peak RSS 760 → 850
/// MB), single-stream generation 65–68 → 74–78 tok/s, batched generation and collection
/// unchanged (`scalpel eval MODEL --suite ppl --ppl-windows 8`, `scalpel bench`, quiet,
/// 2 runs each). Other allocators and C libraries are left as they are.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called first in main, before any other
    // thread exists. A value this glibc refuses leaves its default in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Exits on a command line clap refused. A value one of scalpel's parsers refused (a suite
/// list, a layer, an epoch: the message says what is wrong) is one line like every other
/// error; other usage errors keep clap's hints (possible values, similar flags).
fn usage_error(e: clap::Error) -> ! {
    if e.kind() == clap::error::ErrorKind::ValueValidation {
        let text = e.render().to_string();
        eprintln!("{}", text.lines().next().unwrap_or("error: invalid value"));
        std::process::exit(e.exit_code());
    }
    e.exit()
}

/// Exit status of a process the shell saw killed by SIGPIPE.
const EXIT_PIPE: i32 = 128 + libc::SIGPIPE;

/// Makes interruptions leave nothing behind and say what happened in one line:
/// - SIGINT, SIGTERM, SIGHUP are blocked in every thread (threads inherit the mask; std's
///   `Command` clears it in children) and taken by one thread, which removes this process's
///   temporary outputs and exits with 128 + the signal, as the default action would report;
/// - a closed stdout or stderr (`scalpel inspect M | head -1`): `println!` panics on EPIPE
///   (Rust ignores SIGPIPE, so writes fail instead); the panic hook turns that panic into a
///   quiet exit with status 141, what the shell shows for a tool killed by SIGPIPE;
/// - SIGBUS, raised when a memory-mapped input is truncated while being read: one line and
///   exit 135 instead of a core dump (temporaries are removed by the next write).
fn handle_signals() {
    // SAFETY: plain libc calls on a zeroed, then initialised, local signal set; done first in
    // main, before any other thread exists, so every later thread inherits the mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is an initialised signal set owned by this thread; sigwait writes the
        // signal number into `sig`, a valid local.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            return;
        }
        remove_live_temps();
        let _ = writeln!(
            std::io::stderr(),
            "error: interrupted by signal {sig}; temporary outputs removed, no output written"
        );
        std::process::exit(128 + sig);
    });

    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let msg = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to std") && msg.contains("Broken pipe") {
            remove_live_temps();
            std::process::exit(EXIT_PIPE);
        }
        default(info)
    }));

    extern "C" fn on_sigbus(_: libc::c_int) {
        const MSG: &[u8] = b"error: bus error reading a memory-mapped input: was a model file truncated or changed while scalpel read it?\n";
        // SAFETY: write(2) and _exit(2) are async-signal-safe; MSG is a static buffer.
        unsafe {
            libc::write(2, MSG.as_ptr().cast(), MSG.len());
            libc::_exit(128 + libc::SIGBUS);
        }
    }
    // SAFETY: installs a handler that only calls async-signal-safe functions; the sigaction
    // struct is zeroed (empty mask, no flags) and then given the handler's address.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
    }
}
