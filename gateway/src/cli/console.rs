//! `smimegw console`: administration on a terminal. The appliance runs it on its serial
//! port (ttyS0); init starts it again after each sign-out. Sign in (the first time: choose
//! the `admin` password), then one command per line; plain text within 80 columns.
//!
//! What the gateway knows (status, certificates, queue) comes from the running gateway's
//! control socket; trust anchors, correspondents and the audit log from the certificate
//! store (`DATA/store.sqlite`, through `smimegw::admin`, as the web console does); the
//! policy is staged and applied through `smimegw::admin::policy` too, and the running
//! gateway told over the control socket (`policy-apply`) to put it in force; network
//! settings go to a file the appliance's boot applies (`network.conf` beside the
//! configuration); reboot, factory reset and applying a policy ask for confirmation.

use std::io::{BufRead, IsTerminal, Write};
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use smimegw::admin::{self, Actor};
use smimegw::config::Config;
use smimegw::smime::asn1::day;
use smimegw::store::{Kind, SqliteStore, Store};
use smimegw::users::{self, Names, UserStore};
use zeroize::Zeroizing;

use super::lineedit::{self, Editor, Outcome, RawMode};
use super::queue::{control_request, try_control_request};
use super::table::table;
use crate::error::CliError;

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// The gateway's configuration file (its data directory holds the administrators).
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,

    /// The gateway's data directory (default: the configuration's, else ./var).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,

    /// The appliance's network settings (default: network.conf beside the configuration).
    #[arg(long, value_name = "FILE")]
    network: Option<PathBuf>,

    /// What `reboot` and `factory-reset` run (tests replace it).
    #[arg(long, value_name = "COMMAND", default_value = "reboot", hide = true)]
    reboot_command: String,
}

/// Failed sign-ins before the console pauses.
const MAX_FAILURES: u32 = 5;
/// The pause after [`MAX_FAILURES`].
const LOCKOUT: Duration = Duration::from_secs(60);
/// Shortest administrator password.
const MIN_PASSWORD: usize = users::MIN_ADMIN_PASSWORD;

/// One row of `help`: what to type and what it does. Tab completion reads the same rows
/// ([`lineedit::complete`]): literal words in lower case (`[list]`: may be left out),
/// arguments in capitals, `PATH` a file or folder (completed from the file system),
/// `COMMAND` a command's first word. A row without usage continues the one before.
struct Usage {
    usage: &'static str,
    help: &'static str,
}

const fn row(usage: &'static str, help: &'static str) -> Usage {
    Usage { usage, help }
}

const COMMANDS: &[Usage] = &[
    row("status", "the gateway, token, queue, next hops at a glance"),
    row("certificates", "internal users' signing certificates"),
    row(
        "token",
        "the key token: label, model, and the mechanisms the gateway uses",
    ),
    row(
        "keys [ADDRESS]",
        "internal users' certificates and their keys",
    ),
    row(
        "keys import PATH",
        "a user's PKCS#12 (.p12/.pfx): the key goes into the token (asks for the file's \
         password)",
    ),
    row(
        "keys delete FINGERPRINT",
        "delete a user's key for good (asks your password)",
    ),
    row("queue [list]", "queued messages"),
    row("queue show ID", "one message's envelope and recipients"),
    row("queue retry [ID]", "try now: one message, or all of them"),
    row(
        "queue delete ID",
        "remove one, undelivered and without a bounce",
    ),
    row("network [show]", "the network settings"),
    row("network dhcp", "address by DHCP"),
    row(
        "network static ADDRESS/PREFIX GATEWAY [DNS,...]",
        "a fixed address",
    ),
    row("network hostname NAME", "the appliance's host name"),
    row("network ntp SERVER[,SERVER]", "time servers"),
    row("", "(network settings apply at the next reboot)"),
    row(
        "policy [show]",
        "the policy in force; whether a change is staged",
    ),
    row("policy staged", "the staged change, not yet in force"),
    row(
        "policy stage PATH",
        "check and stage the [policy] tables of a TOML file (as the web console's form \
         takes them)",
    ),
    row(
        "policy apply",
        "put the staged policy in force (asks first)",
    ),
    row("policy discard", "drop the staged policy"),
    row("tamper", "whether the chassis was opened"),
    row(
        "tamper clear",
        "after inspecting it: resume signing and decrypting (asks for your password)",
    ),
    row("trust", "trusted root and intermediate CA certificates"),
    row(
        "trust import PATH",
        "a certificate file, or a FirstClass folder (ca.NAME files trusted, files named by \
         address: correspondents)",
    ),
    row(
        "trust remove FINGERPRINT",
        "stop trusting one (asks for your password)",
    ),
    row(
        "correspondents [ADDRESS]",
        "correspondents' certificates (to encrypt to them)",
    ),
    row(
        "correspondents import PATH",
        "correspondents' certificates from a file (PEM or DER)",
    ),
    row(
        "candidates",
        "certificates from signed mail whose signer is not trusted (never encrypted to)",
    ),
    row(
        "candidates approve FINGERPRINT",
        "vouch for one: it becomes a correspondent's certificate (asks for your password)",
    ),
    row("candidates reject FINGERPRINT", "remove one"),
    row(
        "crls",
        "the CRLs held, and the distribution points with their last download",
    ),
    row(
        "crls import PATH",
        "a CRL file (DER or PEM), checked against its issuer",
    ),
    row(
        "crls refresh",
        "fetch every CRL from its distribution point now",
    ),
    row(
        "crls remove FINGERPRINT",
        "drop a CRL (asks for your password)",
    ),
    row(
        "ca",
        "the built-in CA's certificate (PEM, for mail clients to trust)",
    ),
    row("ca export PATH", "write the CA certificate to a file"),
    row(
        "ca issue ADDRESS",
        "issue an internal user a certificate (a new key in the token)",
    ),
    row(
        "ca renew ADDRESS",
        "renew an internal user's certificate (same key)",
    ),
    row("audit [N]", "the last N administrator actions (default 20)"),
    row("passwd", "change your password"),
    row("reboot", "restart the appliance (asks first)"),
    row(
        "factory-reset",
        "erase keys, certificates, queue and settings (asks first)",
    ),
    row(
        "help [COMMAND]",
        "this list, or one command's part (on a terminal, Tab completes words and file \
         names)",
    ),
    row("logout", "sign out (also: exit, quit, Ctrl-D)"),
];

/// Where the help column starts.
const HELP_COLUMN: usize = 30;

/// The usage patterns, for completion.
fn patterns() -> Vec<&'static str> {
    COMMANDS
        .iter()
        .map(|c| c.usage)
        .filter(|u| !u.is_empty())
        .collect()
}

/// The `help` text: every command, or those whose first word is `topic`; within 80
/// columns.
fn help_text(topic: Option<&str>) -> Option<String> {
    let mut out = String::new();
    let mut shown = false;
    for c in COMMANDS {
        let first = lineedit::literal_words(c.usage).next();
        shown = match (topic, first) {
            (None, _) => true,
            (Some(t), Some(f)) => f == t,
            // A continuation goes with the row before.
            (Some(_), None) => shown,
        };
        if !shown {
            continue;
        }
        let mut help = wrap(c.help, 80 - HELP_COLUMN).into_iter();
        let indent = " ".repeat(HELP_COLUMN);
        if c.usage.len() + 3 > HELP_COLUMN {
            out.push_str(&format!("  {}\n", c.usage));
        } else if !c.usage.is_empty() {
            let first = help.next().unwrap_or_default();
            let width = HELP_COLUMN - 2;
            out.push_str(&format!("  {:<width$}{first}\n", c.usage));
        }
        for line in help {
            out.push_str(&format!("{indent}{line}\n"));
        }
    }
    if out.is_empty() {
        return None;
    }
    Some(format!("Commands:\n{out}"))
}

pub fn run(args: ConsoleArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let mut input = stdin.lock();
    let config_path = args.config.clone();
    let config = match &config_path {
        Some(c) => match Config::load(c, None) {
            Ok(cfg) => Some(cfg),
            // The data directory given: the console does without the settings.
            Err(_) if args.data.is_some() => None,
            Err(e) => {
                writeln!(out, "smimegw console: {e}")?;
                writeln!(
                    out,
                    "The console needs the gateway's settings (on the data disk)."
                )?;
                out.flush()?;
                // init starts the console again: not in a tight loop.
                std::thread::sleep(Duration::from_secs(10));
                return Err(CliError::Usage(e.to_string()));
            }
        },
        None => None,
    };
    let data = match (&args.data, &config) {
        (Some(d), _) => d.clone(),
        (None, Some(cfg)) => cfg.data_dir.clone(),
        (None, None) => PathBuf::from("./var"),
    };
    let network = args.network.clone().unwrap_or_else(|| {
        config_path
            .as_deref()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."))
            .join("network.conf")
    });
    let store = UserStore::open_as(&data.join("admins"), Names::Logins).map_err(users_error)?;
    // Line editing on a terminal that can take it.
    let editing = tty && std::env::var("TERM").map_or(true, |t| t != "dumb");
    let mut c = Console {
        store,
        input: &mut input,
        out,
        tty,
        editor: editing.then(Editor::new),
        data,
        network,
        expiry_days: config
            .as_ref()
            .and_then(|c| c.expiry_warnings.first().copied())
            .unwrap_or(30),
        policy_file: config.map(|c| c.policy_text),
        reboot_command: args.reboot_command.clone(),
        user: String::new(),
        certs: None,
    };
    c.session()
}

struct Console<'a> {
    /// The administrators (reread when the file changes).
    store: UserStore,
    input: &'a mut dyn BufRead,
    out: &'a mut dyn Write,
    tty: bool,
    /// Line editing (on a terminal).
    editor: Option<Editor>,
    data: PathBuf,
    network: PathBuf,
    /// The configuration file's `[policy]` tables (when the console read the file).
    policy_file: Option<String>,
    /// How many days ahead expiring certificates are warned of (`[ca] expiry_warnings`).
    expiry_days: u64,
    reboot_command: String,
    user: String,
    /// The certificate store, opened on first use.
    certs: Option<SqliteStore>,
}

impl Console<'_> {
    fn admins_path(&self) -> &Path {
        self.store.path()
    }

    fn session(&mut self) -> Result<(), CliError> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let version = std::fs::read_to_string("/etc/smimegw/version")
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|_| env!("CARGO_PKG_VERSION").to_string());
        writeln!(self.out)?;
        writeln!(self.out, "smimegw {version} console on {host}")?;
        let admins = users::read_as(self.admins_path(), Names::Logins).map_err(users_error)?;
        let signed_in = if admins.is_empty() {
            self.first_admin()?
        } else {
            self.sign_in()?
        };
        if !signed_in {
            return Ok(());
        }
        let tab = if self.editor.is_some() {
            " (Tab completes)"
        } else {
            ""
        };
        writeln!(
            self.out,
            "Signed in as {}. Type help for commands{tab}.",
            self.user
        )?;
        if let Err(e) = self.warnings() {
            writeln!(self.out, "(warnings not read: {e})")?;
        }
        loop {
            let Some(line) = self.command_line()? else {
                writeln!(self.out)?;
                return Ok(());
            };
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                ["logout" | "exit" | "quit"] => {
                    writeln!(self.out, "Signed out.")?;
                    return Ok(());
                }
                ["help" | "?"] => write!(self.out, "{}", help_text(None).unwrap_or_default())?,
                ["help" | "?", topic, ..] => match help_text(Some(topic)) {
                    Some(h) => write!(self.out, "{h}")?,
                    None => writeln!(self.out, "No command {topic:?}. Type help for the list.")?,
                },
                rest => {
                    if let Err(e) = self.command(rest) {
                        writeln!(self.out, "error: {e}")?;
                    }
                }
            }
        }
    }

    fn command(&mut self, words: &[&str]) -> Result<(), CliError> {
        match words {
            ["status"] => self.gateway("status"),
            ["token"] => self.gateway("token"),
            ["certificates" | "certs"] => self.gateway("certificates"),
            ["queue"] | ["queue", "list"] => self.gateway("list"),
            ["queue", "show", id] => self.gateway(&format!("show {id}")),
            ["queue", "retry"] => self.gateway("retry"),
            ["queue", "retry", id] => self.gateway(&format!("retry {id}")),
            ["queue", "delete", id] => self.gateway(&format!("delete {id}")),
            ["network"] | ["network", "show"] => self.network_show(),
            ["network", rest @ ..] => self.network_set(rest),
            ["policy"] | ["policy", "show"] => self.policy_show(),
            ["policy", "staged"] => self.policy_staged(),
            // A path may have spaces, quoted or not (as for trust import).
            ["policy", "stage", path @ ..] if !path.is_empty() => {
                let path = path.join(" ");
                self.policy_stage(Path::new(path.trim_matches(|c| c == '"' || c == '\'')))
            }
            ["policy", "apply"] => self.policy_apply(),
            ["policy", "discard"] => self.policy_discard(),
            ["tamper"] => self.gateway("tamper"),
            ["tamper", "clear"] => {
                if self.password_again("Your password: ", "tamper not cleared")? {
                    self.audit(None, "tamper cleared");
                    self.gateway("tamper-clear")
                } else {
                    Ok(())
                }
            }
            ["keys"] => self.keys_list(None),
            ["keys", "import", path @ ..] if !path.is_empty() => {
                let path = path.join(" ");
                self.keys_import(path.trim_matches(|c| c == '"' || c == '\''))
            }
            ["keys", "delete", fp] => self.keys_delete(fp),
            ["keys", address] => self.keys_list(Some(address)),
            ["trust"] => self.trust_list(),
            // A path may have spaces ("SSL Certificates"), quoted or not.
            ["trust", "import", path @ ..] if !path.is_empty() => {
                let path = path.join(" ");
                let path = path.trim_matches(|c| c == '"' || c == '\'');
                self.trust_import(Path::new(path))
            }
            ["trust", "remove", fp] => self.trust_remove(fp),
            ["correspondents", "import", path @ ..] if !path.is_empty() => {
                let path = path.join(" ");
                self.correspondents_import(Path::new(path.trim_matches(|c| c == '"' || c == '\'')))
            }
            ["crls"] => self.crls(),
            ["crls", "import", path @ ..] if !path.is_empty() => {
                let path = path.join(" ");
                self.crls_import(Path::new(path.trim_matches(|c| c == '"' || c == '\'')))
            }
            ["crls", "refresh"] => {
                let request = serde_json::json!({ "who": self.user, "origin": "serial console" });
                self.gateway(&format!("crl-refresh {request}"))
            }
            ["crls", "remove", fp] => self.crls_remove(fp),
            ["ca"] => self.ca_show(),
            ["ca", "export", path @ ..] if !path.is_empty() => {
                let path = path.join(" ");
                self.ca_export(Path::new(path.trim_matches(|c| c == '"' || c == '\'')))
            }
            ["ca", verb @ ("issue" | "renew"), address] => {
                let request = serde_json::json!({
                    "who": self.user,
                    "origin": "serial console",
                    "address": address,
                    "renew": *verb == "renew",
                });
                self.gateway(&format!("ca-issue {request}"))
            }
            ["candidates"] => self.candidates(),
            ["candidates", verb @ ("approve" | "reject"), fp] => self.candidate(verb, fp),
            ["correspondents"] => self.correspondents(None),
            ["correspondents", address] => self.correspondents(Some(address)),
            ["audit"] => self.audit_log(20),
            ["audit", n] => match n.parse() {
                Ok(n) => self.audit_log(n),
                Err(_) => Err(CliError::Usage(format!("{n:?} is not a number"))),
            },
            ["passwd"] => self.passwd(),
            ["reboot"] => {
                if self.confirm("Reboot the appliance now? Type yes:", "yes")? {
                    self.reboot()
                } else {
                    writeln!(self.out, "Not rebooted.")?;
                    Ok(())
                }
            }
            ["factory-reset"] => self.factory_reset(),
            _ => {
                writeln!(
                    self.out,
                    "Unknown command {:?}. Type help for the list.",
                    words.join(" ")
                )?;
                Ok(())
            }
        }
    }

    /// A command line after the prompt: edited in raw mode on a terminal (Tab completes,
    /// Up/Down recall), else read as it comes; `None` at the end of input.
    fn command_line(&mut self) -> Result<Option<String>, CliError> {
        const PROMPT: &str = "smimegw> ";
        if let Some(editor) = self.editor.as_mut() {
            match RawMode::enter(std::io::stdin()) {
                Ok(raw) => {
                    let patterns = patterns();
                    let complete =
                        |line: &str| lineedit::complete(line, &patterns, &lineedit::list_dir);
                    let got = editor.read_line(PROMPT, self.input, self.out, &complete);
                    // Line mode again before anything else is read or done.
                    drop(raw);
                    return Ok(match got? {
                        Outcome::Line(l) => Some(l),
                        Outcome::Abandoned => Some(String::new()),
                        Outcome::Eof => None,
                    });
                }
                // Not a terminal after all: lines as they come from now on.
                Err(_) => self.editor = None,
            }
        }
        write!(self.out, "{PROMPT}")?;
        self.out.flush()?;
        self.line()
    }

    /// A line from the terminal without its end; `None` at the end of input.
    fn line(&mut self) -> Result<Option<String>, CliError> {
        let mut line = String::new();
        if self.input.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
    }

    /// A secret typed with echo off (on a terminal).
    fn secret(&mut self, prompt: &str) -> Result<Option<Zeroizing<String>>, CliError> {
        // Echo off before the prompt shows: whoever types as soon as it appears is not
        // echoed.
        let stdin = self
            .tty
            .then(|| std::io::stdin().as_fd().try_clone_to_owned().ok())
            .flatten()
            .map(std::fs::File::from);
        let echo = stdin.as_ref().map(hsm::EchoGuard::off);
        write!(self.out, "{prompt}")?;
        self.out.flush()?;
        let mut line = Zeroizing::new(String::new());
        let n = self.input.read_line(&mut line);
        drop(echo);
        writeln!(self.out)?;
        if n? == 0 {
            return Ok(None);
        }
        let s = line.trim_end_matches(['\r', '\n']).to_string();
        Ok(Some(Zeroizing::new(s)))
    }

    fn confirm(&mut self, question: &str, want: &str) -> Result<bool, CliError> {
        write!(self.out, "{question} ")?;
        self.out.flush()?;
        Ok(self.line()?.is_some_and(|l| l.trim() == want))
    }

    /// No administrator yet (first boot): whoever holds the console chooses the `admin`
    /// password.
    fn first_admin(&mut self) -> Result<bool, CliError> {
        writeln!(
            self.out,
            "No administrator exists yet. Choose the password for \"admin\"\n\
             (at least {MIN_PASSWORD} characters)."
        )?;
        let Some(pw) = self.new_password()? else {
            return Ok(false);
        };
        let mut admins = users::read_as(self.admins_path(), Names::Logins).map_err(users_error)?;
        if !admins.is_empty() {
            // Someone else did it meanwhile (the web console): sign in normally.
            return self.sign_in();
        }
        admins.insert("admin".into(), users::hash(&pw).map_err(users_error)?);
        users::write_as(self.admins_path(), &admins, Names::Logins).map_err(users_error)?;
        self.audit(Some("admin"), "administrator password set");
        self.user = "admin".into();
        Ok(true)
    }

    /// Signed in with a one-time password (`serve --dev`'s): nothing but choosing a new one
    /// until it is done; the end of input signs out.
    fn replace_one_time(&mut self, once: &str) -> Result<bool, CliError> {
        writeln!(
            self.out,
            "This is a one-time password: choose your own now (at least {MIN_PASSWORD} \
             characters)."
        )?;
        loop {
            let Some(new) = self.new_password()? else {
                return Ok(false);
            };
            if *new == once {
                writeln!(self.out, "Choose another password than the one-time one.")?;
                continue;
            }
            let mut admins =
                users::read_as(self.admins_path(), Names::Logins).map_err(users_error)?;
            admins.insert(self.user.clone(), users::hash(&new).map_err(users_error)?);
            users::write_as(self.admins_path(), &admins, Names::Logins).map_err(users_error)?;
            self.audit(None, "password changed");
            writeln!(self.out, "Password changed.")?;
            return Ok(true);
        }
    }

    /// A new password typed twice; `None` at the end of input.
    fn new_password(&mut self) -> Result<Option<Zeroizing<String>>, CliError> {
        loop {
            let Some(a) = self.secret("New password: ")? else {
                return Ok(None);
            };
            if a.chars().count() < MIN_PASSWORD {
                writeln!(self.out, "Too short: at least {MIN_PASSWORD} characters.")?;
                continue;
            }
            let Some(b) = self.secret("Again: ")? else {
                return Ok(None);
            };
            if *a != *b {
                writeln!(self.out, "The two do not match.")?;
                continue;
            }
            return Ok(Some(a));
        }
    }

    /// Login and password; a growing pause after each failure, and a longer one (then the
    /// console ends, and init starts a new one) after [`MAX_FAILURES`].
    fn sign_in(&mut self) -> Result<bool, CliError> {
        for failures in 0..MAX_FAILURES {
            write!(self.out, "login: ")?;
            self.out.flush()?;
            let Some(login) = self.line()? else {
                return Ok(false);
            };
            if login.trim().is_empty() {
                continue;
            }
            let Some(pw) = self.secret("Password: ")? else {
                return Ok(false);
            };
            if let Some((user, hash)) = self
                .store
                .verify_account(&login, &pw)
                .map_err(users_error)?
            {
                self.audit(Some(&user), "signed in");
                self.user = user;
                let expired = self.data.join(users::EXPIRED_FILE);
                if users::is_expired(&expired, &self.user, &hash) {
                    return self.replace_one_time(&pw);
                }
                return Ok(true);
            }
            self.audit(Some(login.trim()), "sign-in failed");
            std::thread::sleep(Duration::from_secs(1 << failures.min(4)));
            writeln!(self.out, "Sign-in failed.")?;
        }
        writeln!(
            self.out,
            "Too many failed sign-ins: the console is locked for {} s.",
            LOCKOUT.as_secs()
        )?;
        self.out.flush()?;
        std::thread::sleep(LOCKOUT);
        Ok(false)
    }

    fn gateway(&mut self, request: &str) -> Result<(), CliError> {
        let answer = control_request(&self.data, request)?;
        self.out.write_all(answer.as_bytes())?;
        Ok(())
    }

    fn network_show(&mut self) -> Result<(), CliError> {
        let settings = read_network(&self.network)?;
        if settings.is_empty() {
            writeln!(self.out, "mode:       dhcp (the default)")?;
        }
        for (k, v) in &settings {
            writeln!(self.out, "{:<11} {v}", format!("{k}:"))?;
        }
        writeln!(self.out, "(stored in {})", self.network.display())?;
        Ok(())
    }

    fn network_set(&mut self, words: &[&str]) -> Result<(), CliError> {
        let mut settings = read_network(&self.network)?;
        let set = |s: &mut Vec<(String, String)>, k: &str, v: String| {
            s.retain(|(key, _)| key != k);
            s.push((k.to_string(), v));
        };
        match words {
            ["dhcp"] => {
                set(&mut settings, "mode", "dhcp".into());
                settings.retain(|(k, _)| !["address", "gateway", "dns"].contains(&k.as_str()));
            }
            ["static", address, gateway, dns @ ..] if dns.len() <= 1 => {
                check_cidr(address)?;
                check_ip(gateway)?;
                set(&mut settings, "mode", "static".into());
                set(&mut settings, "address", address.to_string());
                set(&mut settings, "gateway", gateway.to_string());
                if let Some(d) = dns.first() {
                    for s in d.split(',') {
                        check_ip(s)?;
                    }
                    set(&mut settings, "dns", d.to_string());
                }
            }
            ["hostname", name] => {
                let ok = !name.is_empty()
                    && name.len() <= 253
                    && name.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                            && !l.starts_with('-')
                    });
                if !ok {
                    return Err(CliError::Usage(format!("{name:?} is not a host name")));
                }
                set(&mut settings, "hostname", name.to_ascii_lowercase());
            }
            ["ntp", servers] => {
                for s in servers.split(',') {
                    if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '=') {
                        return Err(CliError::Usage(format!("{s:?} is not an NTP server")));
                    }
                }
                set(&mut settings, "ntp", servers.to_string());
            }
            _ => {
                return Err(CliError::Usage(
                    "network dhcp | static ADDRESS/PREFIX GATEWAY [DNS,...] | hostname NAME \
                     | ntp SERVER[,SERVER]"
                        .into(),
                ));
            }
        }
        write_network(&self.network, &settings)?;
        self.audit(None, &format!("network {}", words.join(" ")));
        writeln!(self.out, "Saved; applied at the next reboot.")?;
        Ok(())
    }

    /// Asks the signed-in administrator's password again (before a change that matters);
    /// says `refusal` when it is wrong.
    fn password_again(&mut self, prompt: &str, refusal: &str) -> Result<bool, CliError> {
        let Some(pw) = self.secret(prompt)? else {
            return Ok(false);
        };
        if self
            .store
            .verify(&self.user, &pw)
            .map_err(users_error)?
            .is_some()
        {
            return Ok(true);
        }
        self.audit(None, "wrong password confirming a change");
        std::thread::sleep(Duration::from_secs(1));
        writeln!(self.out, "That is not your password; {refusal}.")?;
        Ok(false)
    }

    fn cert_store(&mut self) -> Result<&SqliteStore, CliError> {
        if self.certs.is_none() {
            let store = SqliteStore::open(&self.data.join("store.sqlite"))
                .map_err(|e| CliError::Usage(e.to_string()))?;
            self.certs = Some(store);
        }
        self.certs
            .as_ref()
            .ok_or_else(|| CliError::Usage("no certificate store".into()))
    }

    /// An administrator's action (by `who`, else the signed-in user): to syslog, and to the
    /// store's audit log where the web console shows it too.
    fn audit(&mut self, who: Option<&str>, what: &str) {
        let who = who.unwrap_or(&self.user).to_string();
        syslog(&who, what);
        let entry = smimegw::store::AuditEntry {
            at: smimegw::spool::now(),
            who,
            origin: "serial console".into(),
            action: what.to_string(),
            detail: String::new(),
        };
        if let Ok(store) = self.cert_store() {
            let _ = store.record(&entry);
        }
    }

    fn actor(&self) -> Actor {
        Actor {
            who: self.user.clone(),
            origin: "serial console".into(),
        }
    }

    fn trust_list(&mut self) -> Result<(), CliError> {
        let trusted = self
            .cert_store()?
            .list(&[Kind::Anchor, Kind::Intermediate])
            .map_err(store_error)?;
        let rows: Vec<Vec<String>> = trusted
            .iter()
            .map(|s| {
                vec![
                    s.kind.as_str().to_string(),
                    fit(&s.info.short_name(), 36),
                    day(s.info.not_after),
                    s.info.fingerprint[..16].to_string(),
                ]
            })
            .collect();
        table(self.out, &["KIND", "NAME", "UNTIL", "FINGERPRINT"], &rows)?;
        writeln!(
            self.out,
            "{} trusted CA certificate(s) (and the built-in CA)",
            trusted.len()
        )?;
        Ok(())
    }

    fn trust_import(&mut self, path: &Path) -> Result<(), CliError> {
        let actor = self.actor();
        let now = smimegw::spool::now();
        let report = admin::import_path(self.cert_store()?, &actor, path, now)
            .map_err(|e| CliError::Usage(e.to_string()))?;
        for (kind, c) in &report.added {
            let what = match kind {
                Kind::Anchor => "trusted (root)",
                Kind::Intermediate => "trusted (intermediate)",
                Kind::External => "correspondent",
                Kind::Internal => "internal user",
                Kind::Candidate => "candidate (awaits approval)",
            };
            let name = if *kind == Kind::External {
                c.addresses.join(", ")
            } else {
                c.short_name()
            };
            writeln!(self.out, "added {what}: {name} ({})", &c.fingerprint[..16])?;
        }
        for c in &report.known {
            writeln!(self.out, "already held: {}", c.short_name())?;
        }
        for (name, why) in &report.skipped {
            writeln!(self.out, "skipped {name}: {why}")?;
        }
        syslog(&self.user, &format!("trust import {}", path.display()));
        Ok(())
    }

    fn correspondents_import(&mut self, path: &Path) -> Result<(), CliError> {
        let bytes = admin::read_limited(path).map_err(admin_error)?;
        let actor = self.actor();
        let name = path.display().to_string();
        let report = admin::import_correspondents(
            self.cert_store()?,
            &actor,
            &name,
            &bytes,
            smimegw::spool::now(),
        )
        .map_err(admin_error)?;
        for (_, c) in &report.added {
            writeln!(
                self.out,
                "added correspondent: {} ({})",
                c.addresses.join(", "),
                &c.fingerprint[..16]
            )?;
        }
        for c in &report.known {
            writeln!(self.out, "already held: {}", c.addresses.join(", "))?;
        }
        syslog(&self.user, &format!("correspondents import {name}"));
        Ok(())
    }

    fn crls(&mut self) -> Result<(), CliError> {
        let o =
            admin::crl::overview(self.cert_store()?, smimegw::spool::now()).map_err(admin_error)?;
        if o.crls.is_empty() {
            writeln!(self.out, "No CRL held.")?;
        }
        for c in &o.crls {
            writeln!(self.out, "{}", fit(&c.issuer, 78))?;
            writeln!(
                self.out,
                "  issued {}, next update {}{}, {} revoked, {}",
                c.this_update,
                if c.next_update.is_empty() {
                    "-"
                } else {
                    &c.next_update
                },
                if c.out_of_date { " (OUT OF DATE)" } else { "" },
                c.revoked,
                &c.fingerprint[..16]
            )?;
            writeln!(self.out, "  from {}", fit(&c.source, 71))?;
        }
        if !o.sources.is_empty() {
            writeln!(self.out, "Distribution points:")?;
            for src in &o.sources {
                writeln!(self.out, "  {}", fit(&src.url, 76))?;
                let result = match (&src.error, src.last_attempt.is_empty()) {
                    (_, true) => "not tried yet".to_string(),
                    (Some(e), _) => format!("{}: {e}", src.last_attempt),
                    (None, _) => format!("{}: ok", src.last_attempt),
                };
                for line in wrap(&result, 74) {
                    writeln!(self.out, "    {line}")?;
                }
            }
        }
        Ok(())
    }

    fn crls_import(&mut self, path: &Path) -> Result<(), CliError> {
        let bytes = admin::read_at_most(path, smimegw::revocation::MAX_CRL).map_err(admin_error)?;
        let actor = self.actor();
        let name = path.display().to_string();
        let v =
            admin::crl::import(self.cert_store()?, &actor, &name, &bytes).map_err(admin_error)?;
        writeln!(
            self.out,
            "added the CRL of {}: {} revoked, next update {}",
            v.issuer,
            v.revoked,
            if v.next_update.is_empty() {
                "-"
            } else {
                &v.next_update
            }
        )?;
        // The running gateway reads it at once (else within a minute).
        let _ = try_control_request(&self.data, "crl-reload");
        syslog(&self.user, &format!("crls import {name}"));
        Ok(())
    }

    fn crls_remove(&mut self, fp: &str) -> Result<(), CliError> {
        if !self.password_again("Your password: ", "nothing removed")? {
            return Ok(());
        }
        let actor = self.actor();
        let gone = admin::crl::remove(self.cert_store()?, &actor, fp).map_err(admin_error)?;
        writeln!(self.out, "removed the CRL of {}", gone.issuer)?;
        let _ = try_control_request(&self.data, "crl-reload");
        syslog(&self.user, &format!("crls remove {fp}"));
        Ok(())
    }

    /// The built-in CA's certificate (`DATA/ca.pem`), PEM.
    fn ca_pem(&self) -> Result<(smimegw::store::CertInfo, String), CliError> {
        let path = self.data.join("ca.pem");
        let bytes = std::fs::read(&path).map_err(|e| {
            CliError::Usage(format!(
                "no built-in CA certificate ({}: {e}); is [ca] enabled and has the gateway \
                 started once?",
                path.display()
            ))
        })?;
        let ders = smimegw::ca::parse_certificates(&bytes)
            .map_err(|_| CliError::Usage(format!("{} is damaged", path.display())))?;
        let der = ders
            .first()
            .ok_or_else(|| CliError::Usage(format!("{} is empty", path.display())))?;
        let info = smimegw::store::CertInfo::parse(der)
            .ok_or_else(|| CliError::Usage(format!("{} does not parse", path.display())))?;
        let pem = smimegw::ca::pem("CERTIFICATE", &[der.as_slice()])
            .map_err(|e| CliError::Usage(e.to_string()))?;
        Ok((info, pem))
    }

    fn ca_show(&mut self) -> Result<(), CliError> {
        let (c, pem) = self.ca_pem()?;
        writeln!(self.out, "subject:    {}", fit(&c.subject, 66))?;
        writeln!(
            self.out,
            "valid:      {} to {}",
            day(c.not_before),
            day(c.not_after)
        )?;
        writeln!(self.out, "sha256:     {}", &c.fingerprint[..32])?;
        writeln!(self.out, "            {}", &c.fingerprint[32..])?;
        self.out.write_all(pem.as_bytes())?;
        Ok(())
    }

    fn ca_export(&mut self, path: &Path) -> Result<(), CliError> {
        let (_, pem) = self.ca_pem()?;
        std::fs::write(path, pem)
            .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))?;
        writeln!(self.out, "The CA certificate is in {}.", path.display())?;
        Ok(())
    }

    /// Warnings shown after sign-in: certificates expiring soon or expired, CRLs out of
    /// date (what the web console's banner says).
    fn warnings(&mut self) -> Result<(), CliError> {
        if !self.data.join("store.sqlite").exists() {
            return Ok(());
        }
        let within = self.expiry_days;
        let ca = self.ca_pem().ok().map(|(c, _)| c.subject);
        let now = smimegw::spool::now();
        let store = self.cert_store()?;
        let soon = admin::expiring(store, ca.as_deref(), now, within).map_err(admin_error)?;
        let stale = admin::crl::out_of_date(store, now).map_err(admin_error)?;
        for e in &soon {
            let when = if e.days_left < 0 {
                format!("EXPIRED on {}", day(e.not_after))
            } else {
                format!("expires in {} day(s), on {}", e.days_left, day(e.not_after))
            };
            writeln!(self.out, "WARNING: {} {when}", fit(&e.address, 40))?;
        }
        if stale > 0 {
            writeln!(
                self.out,
                "WARNING: {stale} CRL(s) out of date (crls): revocation status unknown"
            )?;
        }
        Ok(())
    }

    fn trust_remove(&mut self, fp: &str) -> Result<(), CliError> {
        if !self.password_again("Your password: ", "nothing removed")? {
            return Ok(());
        }
        let actor = self.actor();
        let removed = admin::remove_trust(self.cert_store()?, &actor, fp)
            .map_err(|e| CliError::Usage(e.to_string()))?;
        writeln!(
            self.out,
            "removed {}: {} ({})",
            removed.kind.as_str(),
            removed.info.short_name(),
            &removed.info.fingerprint[..16]
        )?;
        syslog(&self.user, &format!("trust remove {fp}"));
        Ok(())
    }

    fn policy_view(&mut self) -> Result<admin::policy::PolicyView, CliError> {
        let file = self.policy_file.clone().unwrap_or_default();
        admin::policy::view(self.cert_store()?, &file).map_err(admin_error)
    }

    /// The policy in force, and whether a change waits.
    fn policy_show(&mut self) -> Result<(), CliError> {
        let v = self.policy_view()?;
        writeln!(self.out, "In force (from the {}):", v.applied_from)?;
        if v.applied_from == "configuration file" && self.policy_file.is_none() {
            writeln!(
                self.out,
                "  (not shown: the console was started without the configuration file)"
            )?;
        } else if v.applied.trim().is_empty() {
            writeln!(self.out, "  (no [policy] tables: the defaults)")?;
        } else {
            self.show_text(&v.applied)?;
        }
        match &v.staged {
            Some(t) => writeln!(
                self.out,
                "A change is staged ({} line(s)), not yet in force: policy staged shows\n\
                 it, policy apply puts it in force, policy discard drops it.",
                t.lines().count()
            )?,
            None => writeln!(self.out, "Nothing staged.")?,
        }
        Ok(())
    }

    fn policy_staged(&mut self) -> Result<(), CliError> {
        match self.policy_view()?.staged {
            Some(t) => {
                writeln!(self.out, "Staged, not yet in force:")?;
                self.show_text(&t)?;
            }
            None => writeln!(self.out, "Nothing staged.")?,
        }
        Ok(())
    }

    /// Checks a file's `[policy]` tables and stages them; an invalid one is refused with
    /// the reason, and nothing changes.
    fn policy_stage(&mut self, path: &Path) -> Result<(), CliError> {
        let bytes = admin::read_limited(path).map_err(admin_error)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| CliError::Usage(format!("{} is not UTF-8 text", path.display())))?;
        let actor = self.actor();
        admin::policy::stage(self.cert_store()?, &actor, &text).map_err(admin_error)?;
        syslog(&self.user, &format!("policy stage {}", path.display()));
        writeln!(
            self.out,
            "Checked and staged ({} line(s)); policy apply puts it in force.",
            text.lines().count()
        )?;
        Ok(())
    }

    /// Puts the staged policy in force (after a yes): in the store, then in the running
    /// gateway (which reads it from the store); a gateway that is not running takes it
    /// when it starts.
    fn policy_apply(&mut self) -> Result<(), CliError> {
        let Some(staged) = self.policy_view()?.staged else {
            return Err(CliError::Usage(
                "nothing is staged (policy stage PATH first)".into(),
            ));
        };
        writeln!(
            self.out,
            "The staged policy ({} line(s)) replaces the one in force.",
            staged.lines().count()
        )?;
        if !self.confirm("Apply it now? Type yes:", "yes")? {
            writeln!(self.out, "Not applied.")?;
            return Ok(());
        }
        let actor = self.actor();
        admin::policy::apply(self.cert_store()?, &actor).map_err(admin_error)?;
        syslog(&self.user, "policy apply");
        match try_control_request(&self.data, "policy-apply") {
            Ok(Some(answer)) => self.out.write_all(answer.as_bytes())?,
            Ok(None) => writeln!(
                self.out,
                "Applied. The gateway is not running: it uses the new policy when it starts."
            )?,
            Err(e) => {
                return Err(CliError::Gateway(format!(
                    "applied, but the running gateway did not take it ({e}); it uses it \
                     from its next start"
                )));
            }
        }
        Ok(())
    }

    fn policy_discard(&mut self) -> Result<(), CliError> {
        let actor = self.actor();
        if admin::policy::discard(self.cert_store()?, &actor).map_err(admin_error)? {
            syslog(&self.user, "policy discard");
            writeln!(self.out, "The staged policy was discarded.")?;
        } else {
            writeln!(self.out, "Nothing was staged.")?;
        }
        Ok(())
    }

    fn show_text(&mut self, text: &str) -> Result<(), CliError> {
        for line in text_lines(text) {
            writeln!(self.out, "{line}")?;
        }
        Ok(())
    }

    fn keys_list(&mut self, address: Option<&str>) -> Result<(), CliError> {
        let store = self.cert_store()?;
        let held = match address {
            Some(a) => store.for_address(a),
            None => store.list(&[Kind::Internal]),
        }
        .map_err(store_error)?;
        let rows: Vec<Vec<String>> = held
            .iter()
            .filter(|s| s.kind == Kind::Internal)
            .map(|s| {
                vec![
                    fit(&s.info.addresses.join(","), 30),
                    day(s.info.not_after),
                    s.info.fingerprint[..16].to_string(),
                    fit(
                        s.key
                            .as_deref()
                            .and_then(|u| hsm::Pkcs11Uri::parse(u).ok())
                            .and_then(|u| u.object)
                            .as_deref()
                            .unwrap_or("?"),
                        12,
                    ),
                ]
            })
            .collect();
        let n = rows.len();
        table(
            &mut self.out,
            &["ADDRESS", "UNTIL", "FINGERPRINT", "KEY"],
            &rows,
        )?;
        writeln!(self.out, "{n} certificate(s) with a key in the token")?;
        Ok(())
    }

    fn keys_import(&mut self, path: &str) -> Result<(), CliError> {
        let Some(pw) = self.secret(&format!("Password of {path}: "))? else {
            return Ok(());
        };
        let request = serde_json::json!({
            "who": self.user,
            "origin": "serial console",
            "path": std::fs::canonicalize(path).unwrap_or_else(|_| path.into()),
            "password": pw.as_str(),
        });
        self.gateway(&format!("key-import {request}"))
    }

    fn keys_delete(&mut self, fp: &str) -> Result<(), CliError> {
        writeln!(
            self.out,
            "Mail encrypted to this key can no longer be decrypted once it is deleted."
        )?;
        if !self.password_again("Your password: ", "nothing deleted")? {
            return Ok(());
        }
        let request = serde_json::json!({
            "who": self.user,
            "origin": "serial console",
            "fingerprint": fp,
        });
        self.gateway(&format!("key-delete {request}"))
    }

    fn correspondents(&mut self, address: Option<&str>) -> Result<(), CliError> {
        let store = self.cert_store()?;
        let held = match address {
            Some(a) => store.for_address(a),
            None => store.list(&[Kind::External]),
        }
        .map_err(store_error)?;
        let held: Vec<_> = held
            .into_iter()
            .filter(|s| s.kind == Kind::External)
            .collect();
        let rows: Vec<Vec<String>> = held
            .iter()
            .map(|s| {
                vec![
                    fit(&s.info.addresses.join(","), 36),
                    day(s.info.not_before),
                    day(s.info.not_after),
                    s.info.fingerprint[..16].to_string(),
                ]
            })
            .collect();
        table(
            self.out,
            &["ADDRESS", "FROM", "UNTIL", "FINGERPRINT"],
            &rows,
        )?;
        writeln!(self.out, "{} certificate(s)", held.len())?;
        Ok(())
    }

    fn candidates(&mut self) -> Result<(), CliError> {
        let held = self
            .cert_store()?
            .list(&[Kind::Candidate])
            .map_err(store_error)?;
        let rows: Vec<Vec<String>> = held
            .iter()
            .map(|s| {
                vec![
                    fit(&s.info.addresses.join(","), 30),
                    fit(&s.info.short_name(), 20),
                    day(s.info.not_after),
                    s.info.fingerprint[..16].to_string(),
                ]
            })
            .collect();
        table(
            self.out,
            &["ADDRESS", "SUBJECT", "UNTIL", "FINGERPRINT"],
            &rows,
        )?;
        writeln!(
            self.out,
            "{} candidate(s); approve one only after checking its fingerprint with its owner",
            held.len()
        )?;
        Ok(())
    }

    fn candidate(&mut self, verb: &str, fp: &str) -> Result<(), CliError> {
        let actor = self.actor();
        let done = if verb == "approve" {
            if !self.password_again("Your password: ", "nothing approved")? {
                return Ok(());
            }
            admin::approve_candidate(self.cert_store()?, &actor, fp)
        } else {
            admin::reject_candidate(self.cert_store()?, &actor, fp)
        }
        .map_err(|e| CliError::Usage(e.to_string()))?;
        writeln!(
            self.out,
            "{}: {} ({})",
            if verb == "approve" {
                "approved; now used to encrypt"
            } else {
                "removed"
            },
            done.info.addresses.join(", "),
            &done.info.fingerprint[..16]
        )?;
        syslog(&self.user, &format!("candidates {verb} {fp}"));
        Ok(())
    }

    fn audit_log(&mut self, n: usize) -> Result<(), CliError> {
        let entries = self.cert_store()?.audit_log(n).map_err(store_error)?;
        for e in entries.iter().rev() {
            let (y, mo, d, h, mi, _) = smimegw::smime::asn1::civil(e.at);
            let head = format!(
                "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}  {} ({}): {}",
                e.who, e.origin, e.action
            );
            writeln!(self.out, "{}", fit(&head, 79))?;
            for line in wrap(&e.detail, 75) {
                writeln!(self.out, "    {line}")?;
            }
        }
        writeln!(self.out, "{} entr(y/ies)", entries.len())?;
        Ok(())
    }

    fn passwd(&mut self) -> Result<(), CliError> {
        if !self.password_again("Current password: ", "nothing changed")? {
            return Ok(());
        }
        let Some(new) = self.new_password()? else {
            return Ok(());
        };
        let mut admins = users::read_as(self.admins_path(), Names::Logins).map_err(users_error)?;
        admins.insert(self.user.clone(), users::hash(&new).map_err(users_error)?);
        users::write_as(self.admins_path(), &admins, Names::Logins).map_err(users_error)?;
        self.audit(None, "password changed");
        writeln!(self.out, "Password changed.")?;
        Ok(())
    }

    fn reboot(&mut self) -> Result<(), CliError> {
        self.audit(None, "reboot");
        writeln!(self.out, "Rebooting.")?;
        self.out.flush()?;
        let status = std::process::Command::new(&self.reboot_command).status();
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(CliError::Gateway(format!("reboot failed ({s})"))),
            Err(e) => Err(CliError::Gateway(format!("reboot: {e}"))),
        }
    }

    /// Asks twice (the password again, then the words), leaves a mark the boot acts on, and
    /// reboots: the boot erases the data disk before anything uses it.
    fn factory_reset(&mut self) -> Result<(), CliError> {
        writeln!(
            self.out,
            "A factory reset erases the data disk: the token with every private key, the\n\
             certificates, the queued mail, the settings and the administrators."
        )?;
        if !self.password_again("Your password: ", "nothing erased")? {
            return Ok(());
        }
        if !self.confirm("Type \"erase everything\" to go on:", "erase everything")? {
            writeln!(self.out, "Nothing erased.")?;
            return Ok(());
        }
        let mark = self
            .network
            .parent()
            .unwrap_or(Path::new("."))
            .join("factory-reset");
        std::fs::write(&mark, format!("requested by {}\n", self.user)).map_err(|source| {
            CliError::Read {
                path: mark.clone(),
                source,
            }
        })?;
        self.audit(None, "factory reset requested");
        self.reboot()
    }
}

/// An administrator's action, to syslog (the appliance keeps it; elsewhere it goes where
/// syslog goes). Console output stays clean.
fn syslog(user: &str, what: &str) {
    let _ = std::process::Command::new("logger")
        .args(["-t", "smimegw-console", "-p", "auth.notice"])
        .arg(format!("{user}: {what}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

fn admin_error(e: admin::AdminError) -> CliError {
    CliError::Usage(e.to_string())
}

fn store_error(e: smimegw::store::StoreError) -> CliError {
    CliError::Usage(e.to_string())
}

/// A text (a policy) as it is, in lines within 80 columns: control characters shown as
/// `?`, tabs as spaces, a longer line continued after a `\`.
fn text_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line: Vec<char> = line
            .replace('\t', "    ")
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        if line.is_empty() {
            out.push(String::new());
        }
        let mut pieces = line.chunks(78).peekable();
        while let Some(p) = pieces.next() {
            let mut p: String = p.iter().collect();
            if pieces.peek().is_some() {
                p.push('\\');
            }
            out.push(p);
        }
    }
    out
}

/// At most `n` characters (a `~` marks a cut).
fn fit(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('~');
        t
    }
}

/// `text` in lines of at most `width` characters, broken at spaces (a longer word is cut).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word = word.to_string();
        while word.chars().count() > width {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            let head: String = word.chars().take(width).collect();
            word = word.chars().skip(width).collect();
            lines.push(head);
        }
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn users_error(e: users::UsersError) -> CliError {
    CliError::Usage(e.to_string())
}

fn check_ip(s: &str) -> Result<(), CliError> {
    s.parse::<IpAddr>()
        .map(|_| ())
        .map_err(|_| CliError::Usage(format!("{s:?} is not an IP address")))
}

fn check_cidr(s: &str) -> Result<(), CliError> {
    let bad = || CliError::Usage(format!("{s:?} is not ADDRESS/PREFIX (like 192.0.2.10/24)"));
    let (a, p) = s.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = a.parse().map_err(|_| bad())?;
    let p: u8 = p.parse().map_err(|_| bad())?;
    if p > if ip.is_ipv4() { 32 } else { 128 } {
        return Err(bad());
    }
    Ok(())
}

/// `key=value` lines, in file order; a missing file is empty.
fn read_network(path: &Path) -> Result<Vec<(String, String)>, CliError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CliError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    Ok(text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

/// Written beside, synced, renamed over: a power cut leaves the old or the new settings.
fn write_network(path: &Path, settings: &[(String, String)]) -> Result<(), CliError> {
    let mut text = String::from("# smimegw network settings (smimegw console: network)\n");
    for (k, v) in settings {
        text.push_str(&format!("{k}={v}\n"));
    }
    smimegw::fsutil::replace_file(path, text.as_bytes(), 0o644).map_err(|source| CliError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn completions(line: &str) -> Vec<String> {
        lineedit::complete(line, &patterns(), &|_| Vec::new())
            .candidates
            .into_iter()
            .map(|c| c.text)
            .collect()
    }

    #[test]
    fn help_fits_and_every_command_word_in_it_completes() {
        let help = help_text(None).unwrap();
        let mut commands = 0;
        for line in help.lines() {
            assert!(line.chars().count() <= 80, "{line:?}");
            // The usage column: literal words, each completable after the ones before.
            let Some(usage) = line.get(2..HELP_COLUMN.min(line.len())) else {
                continue;
            };
            if line.starts_with("   ") || !line.starts_with("  ") {
                continue;
            }
            let mut typed = String::new();
            for word in lineedit::literal_words(usage) {
                let got = completions(&format!("{typed}{}", &word[..1]));
                assert!(
                    got.iter().any(|w| w == word),
                    "{word} after {typed:?}: {got:?}"
                );
                typed.push_str(word);
                typed.push(' ');
            }
            commands += 1;
        }
        assert_eq!(
            commands,
            COMMANDS.iter().filter(|c| !c.usage.is_empty()).count()
        );
        for want in [
            "policy stage PATH",
            "policy apply",
            "policy discard",
            "policy staged",
        ] {
            assert!(help.contains(want), "{want}");
        }
    }

    #[test]
    fn help_for_one_command() {
        let h = help_text(Some("network")).unwrap();
        assert!(
            h.contains("network dhcp") && h.contains("apply at the next reboot"),
            "{h}"
        );
        assert!(!h.contains("policy"), "{h}");
        assert!(help_text(Some("frobnicate")).is_none());
        assert_eq!(completions("help po"), ["policy"]);
        assert_eq!(
            completions("policy "),
            ["apply", "discard", "show", "stage", "staged"]
        );
        assert_eq!(completions("policy stage"), ["stage", "staged"]);
    }

    #[test]
    fn policy_text_within_80_columns() {
        let long = format!("never_sign_to = [{}]", "\"x@example.com\", ".repeat(10));
        let text = format!("[policy]\nsign = \"always\"\n\n{long}\nbad = \"\x1b[2J\"\n");
        let lines = text_lines(&text);
        assert_eq!(lines[..3], ["[policy]", "sign = \"always\"", ""]);
        assert!(lines.iter().all(|l| l.chars().count() <= 80), "{lines:?}");
        assert!(lines[3].ends_with('\\'));
        assert_eq!(lines[3..lines.len() - 1].concat().replace('\\', ""), long);
        assert_eq!(lines.last().unwrap(), "bad = \"?[2J\"");
    }
}
