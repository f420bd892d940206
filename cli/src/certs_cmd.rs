//! `clustermesh certs`: create a CA, issue certificates, show them.

use std::{
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{Context, anyhow};
use certs::{Ca, CaError, CertName, CertificateInfo, Validity};
use clap::{ArgGroup, Args, Subcommand};

use crate::command_error::CommandError;

#[derive(Debug, Args)]
pub(crate) struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Create a CA: DIR/ca.crt and DIR/ca.key (mode 0600).
    Init(InitArgs),
    /// Issue a server or client certificate signed by the CA in DIR:
    /// DIR/NAME.crt and DIR/NAME.key (mode 0600). An existing pair is replaced.
    Issue(IssueArgs),
    /// Show the certificates of a PEM file: subject, names, issuer, expiry.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
struct InitArgs {
    /// Directory for the CA files; created if missing.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Days the CA is valid.
    #[arg(long, value_name = "DAYS", default_value_t = 3650)]
    validity: u32,
    /// Common name of the CA; give each cluster's CA its own when clusters
    /// have separate CAs.
    #[arg(long, value_name = "CN", default_value = Ca::DEFAULT_COMMON_NAME)]
    common_name: String,
    /// Replace an existing CA. Every certificate it issued stops being trusted
    /// once peers trust only the new one.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("kind").required(true).args(["server", "client"])))]
struct IssueArgs {
    /// Directory holding the CA (from `certs init`); the certificate is
    /// written there.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Certificate name: its common name and file stem. Client names are the
    /// identity servers authorize: remote-<cluster>, admin-<cluster>,
    /// local-<cluster>.
    #[arg(long, value_name = "NAME")]
    name: CertName,
    /// Issue a server certificate (needs at least one --dns or --ip).
    #[arg(long)]
    server: bool,
    /// Issue a client certificate with NAME as common name.
    #[arg(long)]
    client: bool,
    /// DNS name clients dial (server certificates; repeatable).
    #[arg(long = "dns", value_name = "NAME")]
    dns_names: Vec<String>,
    /// IP address clients dial (server certificates; repeatable).
    #[arg(long = "ip", value_name = "ADDR")]
    ip_addresses: Vec<IpAddr>,
    /// Days the certificate is valid.
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    validity: u32,
}

#[derive(Debug, Args)]
struct ShowArgs {
    /// PEM file with one or more certificates.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

pub(crate) fn run(args: CertsArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    match args.command {
        CertsCommand::Init(args) => init(args, out),
        CertsCommand::Issue(args) => issue(args, out),
        CertsCommand::Show(args) => show(args, out),
    }
}

fn init(args: InitArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    let validity = Validity::days(args.validity).map_err(CommandError::usage)?;
    if Ca::exists_in(&args.dir) && !args.force {
        return Err(CommandError::usage(anyhow!(
            "a CA already exists in {} (use --force to replace it)",
            args.dir.display()
        )));
    }
    let ca = Ca::generate(&args.common_name, validity).map_err(CommandError::usage)?;
    ca.write(&args.dir).map_err(CommandError::failed)?;
    writeln!(
        out,
        "created CA {} valid until {}\n  {}\n  {}",
        ca.info().subject,
        ca.info().not_after_rfc3339(),
        args.dir.join(Ca::CERT_FILE).display(),
        args.dir.join(Ca::KEY_FILE).display(),
    )
    .map_err(CommandError::failed)
}

fn issue(args: IssueArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    if args.client && !(args.dns_names.is_empty() && args.ip_addresses.is_empty()) {
        return Err(CommandError::usage(anyhow!(
            "--dns and --ip apply to server certificates only"
        )));
    }
    if args.server && args.dns_names.is_empty() && args.ip_addresses.is_empty() {
        return Err(CommandError::usage(anyhow!(
            "a server certificate needs at least one --dns or --ip: the names clients dial"
        )));
    }
    let validity = Validity::days(args.validity).map_err(CommandError::usage)?;
    let ca = Ca::load(&args.dir)
        .with_context(|| {
            format!(
                "cannot use the CA in {} (create one with `clustermesh certs init --dir {}`)",
                args.dir.display(),
                args.dir.display()
            )
        })
        .map_err(CommandError::usage)?;
    let issued = if args.server {
        ca.issue_server(&args.name, &args.dns_names, &args.ip_addresses, validity)
    } else {
        ca.issue_client(&args.name, validity)
    };
    let issued = issued.map_err(|err| match err {
        CaError::Issue { .. } => CommandError::failed(err),
        _ => CommandError::usage(err),
    })?;
    let files = issued.write(&args.dir).map_err(CommandError::failed)?;
    let info = issued.info().map_err(CommandError::failed)?;
    writeln!(
        out,
        "issued {} certificate {} valid until {}\n  {}\n  {}",
        if args.server { "server" } else { "client" },
        info.subject,
        info.not_after_rfc3339(),
        files.cert.display(),
        files.key.display(),
    )
    .map_err(CommandError::failed)
}

fn show(args: ShowArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    let certs = CertificateInfo::from_pem_file(&args.file).map_err(CommandError::usage)?;
    let now = SystemTime::now();
    let mut text = String::new();
    for (i, cert) in certs.iter().enumerate() {
        if certs.len() > 1 {
            text.push_str(&format!(
                "{}certificate {} of {}\n",
                if i > 0 { "\n" } else { "" },
                i + 1,
                certs.len()
            ));
        }
        text.push_str(&describe(&args.file, cert, now));
    }
    out.write_all(text.as_bytes()).map_err(CommandError::failed)
}

fn describe(file: &Path, cert: &CertificateInfo, now: SystemTime) -> String {
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "-".to_owned()
        } else {
            items.join(", ")
        }
    };
    let usage = match (cert.is_ca, cert.server_auth, cert.client_auth) {
        (true, _, _) => "ca",
        (false, true, true) => "server, client",
        (false, true, false) => "server",
        (false, false, true) => "client",
        (false, false, false) => "-",
    };
    let days_left = cert.days_left(now);
    let status = if !cert.is_valid_at(now) && now < cert.not_before {
        " (not yet valid)".to_owned()
    } else if days_left < 0 {
        " (expired)".to_owned()
    } else {
        String::new()
    };
    [
        ("file", file.display().to_string()),
        ("subject", cert.subject.clone()),
        ("dns names", list(cert.dns_names.clone())),
        (
            "ip addresses",
            list(cert.ip_addresses.iter().map(ToString::to_string).collect()),
        ),
        ("issuer", cert.issuer.clone()),
        ("serial", cert.serial.clone()),
        ("usage", usage.to_owned()),
        ("not before", cert.not_before_rfc3339()),
        ("not after", cert.not_after_rfc3339()),
        ("days left", format!("{days_left}{status}")),
    ]
    .iter()
    .map(|(key, value)| format!("{:<13} {value}\n", format!("{key}:")))
    .collect()
}
