//! `clustermesh certs`: create a CA, issue certificates, show them, and
//! rotate a cluster's mesh CA (the work is `cluster_setup::ca_rotation`'s).

use std::{
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{Context, anyhow};
use certs::{Ca, CaError, CertName, CertificateInfo, Validity};
use clap::{ArgGroup, Args, Subcommand};
use cluster_setup::{Phase, RotateError, RotateOptions, ca_rotation};

use crate::{command_error::CommandError, connect_cmd, observe_cmd::runtime};

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
    /// Replace the mesh CA of a cluster made by `cluster init`, in three
    /// phases run in order while every connection stays up: `begin` (a new
    /// CA beside the old one in every CA bundle, the peers' records of this
    /// cluster included), `reissue` (every certificate issued again by the
    /// new CA: same names, same length of validity), `finish` (the old CA
    /// out of every bundle; refused while a certificate still chains only
    /// to it). Each phase checks everything before it changes anything,
    /// prints what it checked and did, and may be run again (an
    /// interrupted run completes). Install the changed files on the hosts
    /// between phases; the daemons reload them. See README "Run it on real
    /// machines", step 6.
    Rotate(RotateArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RotatePhase {
    /// A new CA beside the old one in every bundle.
    Begin,
    /// Every certificate issued again by the new CA.
    Reissue,
    /// The old CA dropped from every bundle.
    Finish,
}

#[derive(Debug, Args)]
struct RotateArgs {
    /// The phase to run: begin, reissue, finish (in this order).
    #[arg(value_enum, value_name = "PHASE")]
    phase: RotatePhase,
    /// The cluster's `cluster init` output (its CA files, certificates and
    /// admin access; the rotation's state goes to DIR/ca-rotation).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The admin descriptor of a cluster connected to this one
    /// (repeatable): its record of this cluster gets each phase's CA
    /// bundle and certificate. Every cluster this one has a record of must
    /// be given; so must one connected to it in one direction only.
    #[arg(long = "peer", value_name = "FILE")]
    peers: Vec<PathBuf>,
    /// With begin: the new CA (ca.crt, ca.key) instead of a new one made
    /// in DIR/ca-rotation/ca-<n>, e.g. one new CA for every cluster of a
    /// mesh.
    #[arg(long, value_name = "DIR")]
    new_ca_dir: Option<PathBuf>,
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
        CertsCommand::Rotate(args) => rotate(args, out),
    }
}

fn rotate(args: RotateArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    let phase = match args.phase {
        RotatePhase::Begin => Phase::Begin,
        RotatePhase::Reissue => Phase::Reissue,
        RotatePhase::Finish => Phase::Finish,
    };
    let peers = args
        .peers
        .iter()
        .map(|p| connect_cmd::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let new_ca_dir = args
        .new_ca_dir
        .as_deref()
        .map(|d| {
            std::path::absolute(d)
                .with_context(|| format!("cannot make {} absolute", d.display()))
                .map_err(CommandError::usage)
        })
        .transpose()?;
    // The state records the new CA's directory: absolute, so that later
    // phases find it from any working directory.
    let dir = std::path::absolute(&args.dir)
        .with_context(|| format!("cannot make {} absolute", args.dir.display()))
        .map_err(CommandError::usage)?;
    let options = RotateOptions {
        dir,
        new_ca_dir,
        peers,
    };
    let rt = runtime()?;
    let result = crate::connect_cmd::with_progress(out, |progress| {
        rt.block_on(ca_rotation::rotate(phase, &options, progress))
    })?;
    let what = format!("certs rotate {}", phase.as_str());
    result.map_err(|e| match e {
        RotateError::Refused(_) => {
            CommandError::usage(anyhow!("{what} refused: {e}; nothing was changed"))
        }
        RotateError::Unreachable(_) => {
            CommandError::unavailable(anyhow!("{what} refused: {e}; nothing was changed"))
        }
        RotateError::Write { .. } | RotateError::Update { .. } => {
            CommandError::failed(anyhow::Error::new(e).context(format!(
                "{what} stopped partway; run it again to complete it"
            )))
        }
    })?;
    let dir = args.dir.display();
    let next = match phase {
        Phase::Begin => format!(
            "next: install the changed files on the hosts (the daemons reload them), let the \
             peers' agents mirror their records, and export the descriptors again (`clustermesh \
             cluster export --dir {dir}`, and with --admin: their CA bundle holds both CAs; one \
             with the old CA only cannot verify the apiserver once reissue ran), then \
             `clustermesh certs rotate reissue --dir {dir}` with the same --peer list"
        ),
        Phase::Reissue => format!(
            "next: install the changed files on the hosts, export the admin descriptor again \
             (`clustermesh cluster export --dir {dir} --admin`: its certificate is new), then \
             `clustermesh certs rotate finish --dir {dir}` with the same --peer list"
        ),
        Phase::Finish => format!(
            "the old CA is retired: install the changed files on the hosts and export the \
             descriptors again (`clustermesh cluster export --dir {dir}`)"
        ),
    };
    writeln!(out, "phase {} done; {next}", phase.as_str())?;
    Ok(())
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
