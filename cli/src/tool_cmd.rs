//! `clustermesh tool …`: small programs the local mesh runs inside pods.

use std::{
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener},
    time::Duration,
};

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::command_error::CommandError;

#[derive(Debug, Args)]
pub(crate) struct ToolArgs {
    #[command(subcommand)]
    command: ToolCommand,
}

#[derive(Debug, Subcommand)]
enum ToolCommand {
    /// Answer each TCP connection with NAME, then echo one line back.
    EchoServer {
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// Connect to ADDR, send a line, print who answered.
    Request {
        to: SocketAddr,
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

pub(crate) fn run(args: ToolArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    match args.command {
        ToolCommand::EchoServer { name, port } => {
            echo_server(&name, port).map_err(CommandError::failed)
        }
        ToolCommand::Request { to, timeout } => {
            let (server, peer) = localmesh::request(to, timeout).map_err(CommandError::failed)?;
            writeln!(out, "{server} (via {peer})").map_err(CommandError::failed)
        }
    }
}

fn echo_server(name: &str, port: u16) -> anyhow::Result<()> {
    // Both families on one socket (a dual-stack pod is reached on either
    // address); IPv4 alone where the namespace has no IPv6.
    let listener = TcpListener::bind((Ipv6Addr::UNSPECIFIED, port))
        .or_else(|_| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))
        .with_context(|| format!("listen on port {port}"))?;
    for conn in listener.incoming() {
        let Ok(mut stream) = conn else { continue };
        let name = name.to_string();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            if stream.write_all(format!("{name}\n").as_bytes()).is_err() {
                return;
            }
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_ok() {
                let _ = stream.write_all(line.as_bytes());
            }
        });
    }
    Ok(())
}
