//! Ports of the processes the test kills and starts again on the same port. They are chosen
//! below the kernel's ephemeral range: a listener bound to port 0 (the test's proxies, other
//! tests on the machine) and the local end of an outgoing connection only ever get ports inside
//! that range, so none of them can take a process's port while the process is down. (A port
//! picked by binding port 0 and letting go was taken by a proxy started right after, and the
//! element meant for it never started.)

use std::collections::HashSet;
use std::sync::Mutex;

static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// The first port of the ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A loopback port outside the ephemeral range, free now and not handed out before in this run.
pub fn fixed_port() -> u16 {
    let high = ephemeral_start().max(11_000);
    let mut taken = TAKEN.lock().expect("ports");
    let taken = taken.get_or_insert_with(HashSet::new);
    for _ in 0..10_000 {
        let port = rand::random_range(10_000..high);
        if !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.insert(port);
            return port;
        }
    }
    panic!("no free loopback port below {high}");
}
