//! An open-loop HTTP load generator with Poisson arrivals.
//!
//! `bench/run` paces wrk with a Lua `delay` hook, which wrk rounds to whole
//! milliseconds and fires from its event loop's timers. Requests then leave
//! in bursts at millisecond ticks, and a proxy that takes 30 µs per request
//! responds to the last of a burst of 15 some 0.45 ms after the first. This
//! generator spreads requests the way independent clients do: each
//! connection sends at exponentially distributed intervals, kept in
//! nanoseconds rather than whole milliseconds. How late the generator
//! itself sends, on a busy core, is part of its report.
//!
//! Latency is measured from the moment a request was due, not from when it
//! was written. A request that falls due while its connection still waits
//! for the previous response goes out once that response ends, and the wait
//! counts toward its latency. So a slow server cannot hide its stalls by
//! slowing the load down (coordinated omission).
//!
//! ```text
//! openloop --url http://127.0.0.1:18082/conn-00/v1/items/42 --rate 15000 \
//!     --connections 50 --duration 10 --warmup 3 --header 'Authorization: Bearer ...'
//! ```
//!
//! It prints a summary and a `RESULT` line in the format of `bench/run`'s wrk
//! report. Responses other than 2xx count as errors.

use std::num::NonZeroU64;
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use castellan_bench::http1::{Connection, Target};
use castellan_bench::percentile;

struct Options {
    target: Target,
    rate: f64,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    /// How long one read or write may wait before the exchange fails.
    timeout: Duration,
}

/// Counts and latencies of one connection in the measured window.
#[derive(Default)]
struct Tally {
    /// Microseconds from when each request was due to the end of its response.
    latencies: Vec<u64>,
    /// Microseconds from when each request was due to when it was written,
    /// for requests whose connection was free: the generator's own lateness.
    send_lag: Vec<u64>,
    errors: u64,
    /// The first exchange in the measured window that failed or had a
    /// status other than 2xx, to print with the summary.
    first_error: Option<String>,
    reconnects: u64,
    /// Time from the start of the measured window to the end of the last
    /// response to a request due in it.
    measured_span: Duration,
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("openloop: {message}");
            eprintln!("usage: openloop --url http://IP:PORT/PATH --rate REQ_PER_S [--connections N] [--duration S] [--warmup S] [--timeout S] [--header 'Name: value']...");
            return ExitCode::from(2);
        }
    };

    let options = Arc::new(options);
    let barrier = Arc::new(Barrier::new(options.connections + 1));
    let workers: Vec<_> = (0..options.connections)
        .map(|index| {
            let options = Arc::clone(&options);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || run_connection(index, &options, &barrier))
        })
        .collect();
    barrier.wait();

    let mut total = Tally::default();
    let mut failed = None;
    for worker in workers {
        match worker.join() {
            Ok(Ok(tally)) => {
                total.latencies.extend(tally.latencies);
                total.send_lag.extend(tally.send_lag);
                total.errors += tally.errors;
                total.reconnects += tally.reconnects;
                total.measured_span = total.measured_span.max(tally.measured_span);
                if total.first_error.is_none() {
                    total.first_error = tally.first_error;
                }
            }
            Ok(Err(message)) => failed = Some(message),
            Err(_) => failed = Some("a connection thread panicked".to_owned()),
        }
    }
    if let Some(message) = failed {
        eprintln!("openloop: {message}");
        return ExitCode::FAILURE;
    }

    if total.latencies.is_empty() && total.errors > 0 {
        let cause = total.first_error.as_deref().unwrap_or("non-2xx responses");
        eprintln!(
            "openloop: all {} requests in the measured window failed; the first failure: {cause}",
            total.errors
        );
        return ExitCode::FAILURE;
    }
    if total.latencies.is_empty() {
        eprintln!(
            "openloop: no request was due in the measured window; raise --rate or --duration"
        );
        return ExitCode::FAILURE;
    }
    report(&options, &mut total);
    ExitCode::SUCCESS
}

/// Sends requests on one connection until the run ends.
fn run_connection(index: usize, options: &Options, barrier: &Barrier) -> Result<Tally, String> {
    // The default slack lets each sleep end up to 50 µs late.
    let _ = rustix::thread::set_current_timer_slack(NonZeroU64::new(1_000));
    let address = options.target.address;
    let opened = Connection::open(address, options.timeout);
    let mut random = Xorshift::new(index);
    let mean_gap = options.connections as f64 / options.rate;

    // Every thread reaches the barrier, even one that failed to connect,
    // so that the main thread does not wait for it forever.
    barrier.wait();
    let mut connection = opened.map_err(|error| format!("cannot connect to {address}: {error}"))?;
    let start = Instant::now();
    let measured_from = start + options.warmup;
    let end = measured_from + options.duration;
    let mut tally = Tally::default();
    let mut due = start;

    loop {
        // A gap too long for a `Duration` or an `Instant` ends the run too.
        let gap = Duration::try_from_secs_f64(random.exponential(mean_gap));
        match gap.ok().and_then(|gap| due.checked_add(gap)) {
            Some(next) if next < end => due = next,
            _ => return Ok(tally),
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }

        let sent = Instant::now();
        let response = connection.exchange(&options.target.request);
        let done = Instant::now();
        let measured = due >= measured_from;
        if measured {
            tally.measured_span = done - measured_from;
        }

        match response {
            Ok(response) => {
                if measured {
                    if !(200..300).contains(&response.status) {
                        tally.errors += 1;
                        tally
                            .first_error
                            .get_or_insert_with(|| format!("status {}", response.status));
                    }
                    tally.latencies.push(micros(done - due));
                    if now <= due {
                        tally.send_lag.push(micros(sent - due));
                    }
                }
                if response.close {
                    connection = reconnect(address, options.timeout, &mut tally)?;
                }
            }
            Err(error) => {
                if measured {
                    tally.errors += 1;
                    tally.first_error.get_or_insert_with(|| error.to_string());
                }
                connection = reconnect(address, options.timeout, &mut tally)?;
            }
        }
    }
}

fn reconnect(
    address: std::net::SocketAddr,
    timeout: Duration,
    tally: &mut Tally,
) -> Result<Connection, String> {
    tally.reconnects += 1;
    Connection::open(address, timeout)
        .map_err(|error| format!("cannot reconnect to {address}: {error}"))
}

fn report(options: &Options, total: &mut Tally) {
    let requests = total.latencies.len();
    // A server slower than the requested rate leaves a queue that takes
    // longer than --duration to drain, and the throughput counts that time.
    let elapsed = options.duration.max(total.measured_span);
    let seconds = elapsed.as_secs_f64();
    let p50 = percentile(&mut total.latencies, 0.50);
    let p99 = percentile(&mut total.latencies, 0.99);
    let p999 = percentile(&mut total.latencies, 0.999);
    let lag_p99 = if total.send_lag.is_empty() {
        0
    } else {
        percentile(&mut total.send_lag, 0.99)
    };

    println!(
        "{requests} requests in {seconds:.3} s ({:.0} req/s, {:.0} requested) on {} connections",
        requests as f64 / seconds,
        options.rate,
        options.connections
    );
    println!("latency from when each request was due: p50 {p50} us, p99 {p99} us, p99.9 {p999} us");
    println!(
        "generator's own send lag p99: {lag_p99} us; errors {}, reconnects {}",
        total.errors, total.reconnects
    );
    if let Some(error) = &total.first_error {
        println!("first failed exchange: {error}");
    }
    println!(
        "RESULT requests={requests} duration_us={} p50_us={p50} p99_us={p99} p999_us={p999} errors={}",
        elapsed.as_micros(),
        total.errors
    );
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A xorshift64* generator, random enough for arrival times and free of
/// dependencies.
struct Xorshift(u64);

impl Xorshift {
    fn new(index: usize) -> Xorshift {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        Xorshift((nanos ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    /// Returns a uniform value in (0, 1].
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        (bits as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Returns an exponentially distributed value with the given mean.
    fn exponential(&mut self, mean: f64) -> f64 {
        -mean * self.uniform().ln()
    }
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut url = None;
    let mut rate = None;
    let mut connections = 50usize;
    let mut duration = 10.0f64;
    let mut warmup = 3.0f64;
    let mut timeout = 2.0f64;
    let mut headers = Vec::new();
    while let Some(flag) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--url" => url = Some(value("--url")?),
            "--rate" => rate = Some(positive("--rate", &value("--rate")?)?),
            "--connections" => {
                let text = value("--connections")?;
                connections = text.parse().map_err(|_| {
                    format!("--connections {text:?} is not a whole number of connections")
                })?;
            }
            "--duration" => duration = positive("--duration", &value("--duration")?)?,
            "--warmup" => warmup = non_negative("--warmup", &value("--warmup")?)?,
            "--timeout" => timeout = positive("--timeout", &value("--timeout")?)?,
            "--header" => headers.push(value("--header")?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }

    let url = url.ok_or("--url is required")?;
    let rate = rate.ok_or("--rate is required")?;
    if connections == 0 || connections > 10_000 {
        return Err(format!(
            "--connections {connections} is out of range: use 1 to 10000"
        ));
    }
    let duration = seconds("--duration", duration)?;
    let warmup = seconds("--warmup", warmup)?;
    // The connection threads add both to the current `Instant`.
    if warmup
        .checked_add(duration)
        .and_then(|run| Instant::now().checked_add(run))
        .is_none()
    {
        return Err("--warmup plus --duration is too long to schedule".to_owned());
    }
    Ok(Options {
        target: Target::new(&url, &headers)?,
        rate,
        connections,
        duration,
        warmup,
        timeout: seconds("--timeout", timeout)?,
    })
}

fn seconds(name: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|_| format!("{name} {value} s is too long"))
}

fn positive(name: &str, text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value > 0.0 && value.is_finite() => Ok(value),
        _ => Err(format!("{name} {text:?} is not a positive number")),
    }
}

fn non_negative(name: &str, text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value >= 0.0 && value.is_finite() => Ok(value),
        _ => Err(format!(
            "{name} {text:?} is not a number of seconds (0 or more)"
        )),
    }
}
