//! `kaktus-libvirt --uri URI`: the Kaktus agent's libvirt helper, the only binary of
//! the agent that links libvirt.
//!
//! Reads one JSON request per line on stdin, runs each on its own thread against one
//! shared connection (libvirt's connections are thread-safe; a slow call does not hold
//! the others) and writes one JSON answer per line on stdout, carrying the request's
//! id. Exits once stdin ends and every answer is written. The agent starts it on
//! demand and closes its stdin when idle (`kaktus::libvirt`); the protocol is
//! `kaktus::libvirt_protocol`.

mod connection;
mod ops;

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use kaktus::libvirt_protocol::{Envelope, Reply};

use connection::Connection;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let uri = match (args.next().as_deref(), args.next(), args.next()) {
        (Some("--uri"), Some(uri), None) => uri,
        _ => {
            eprintln!(
                "usage: kaktus-libvirt --uri URI  (started by the kaktus agent: JSON requests on stdin)"
            );
            return ExitCode::from(2);
        }
    };
    let connection = Connection::new(&uri);
    let stdout = Arc::new(Mutex::new(std::io::stdout()));
    let failed = std::thread::scope(|scope| {
        for line in std::io::stdin().lock().lines() {
            let line = match line {
                Ok(line) => line,
                Err(e) => {
                    eprintln!("kaktus-libvirt: reading requests: {e}");
                    return true;
                }
            };
            let envelope: Envelope = match serde_json::from_str(&line) {
                Ok(envelope) => envelope,
                Err(e) => {
                    // Without an id there is no one to answer: a bug in the agent.
                    eprintln!("kaktus-libvirt: unreadable request ignored: {e}");
                    continue;
                }
            };
            let connection = &connection;
            let stdout = Arc::clone(&stdout);
            scope.spawn(move || {
                let result = connection.run(|c| ops::handle(c, envelope.request));
                answer(
                    &stdout,
                    Reply {
                        id: envelope.id,
                        result,
                    },
                );
            });
        }
        false
    });
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn answer(stdout: &Mutex<std::io::Stdout>, reply: Reply) {
    let line = match serde_json::to_string(&reply) {
        Ok(line) => line,
        Err(e) => serde_json::json!({"id": reply.id, "result": {"Err": format!("kaktus-libvirt: encoding the answer: {e}")}}).to_string(),
    };
    let mut out = stdout.lock().unwrap_or_else(PoisonError::into_inner);
    // The agent gone: nothing to tell anyone; stdin ends next and the helper exits.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
