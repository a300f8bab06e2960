//! The recorder service's configuration: /etc/schedlens/recorder.toml, with
//! flags overriding it, resolved into the settings and limits it enforces.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;

use super::protocol::Limits;
use crate::recorder::cli::{parse_duration, parse_size};

pub const DEFAULT_CONFIG: &str = "/etc/schedlens/recorder.toml";
pub const DEFAULT_SOCKET: &str = "/run/schedlens/recorder.sock";
pub const DEFAULT_GROUP: &str = "schedlens";
pub const DEFAULT_SPOOL: &str = "/var/lib/schedlens/spool";

/// Arguments of `schedlens recorder`.
#[derive(Debug, Default, clap::Args)]
#[command(
    after_help = "Every setting may also be given in the configuration file \
    (the same names with _ for -, durations and sizes as strings: max_duration = \"5m\"); \
    flags override it.\n\nExamples:\n  \
    sudo schedlens recorder\n  \
    sudo schedlens recorder --group perf --max-duration 1m --max-bytes 512M\n  \
    schedlens recorder snapshot -o last-30s.pftrace"
)]
pub struct RecorderArgs {
    /// What to ask a running service instead of serving
    #[command(subcommand)]
    pub action: Option<RecorderAction>,
    /// Configuration file [default: /etc/schedlens/recorder.toml, if present]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Socket to listen on (mode 0660, owned by root and --group) [default: /run/schedlens/recorder.sock]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Group of the socket and the traces; its members may record [default: schedlens]
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// Directory of the traces [default: /var/lib/schedlens/spool]
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Longest recording a request may ask for [default: 5m]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_duration: Option<Duration>,
    /// Largest trace: a recording stops there, keeping the file [default: 1G]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_bytes: Option<u64>,
    /// Recordings at once [default: 1]
    #[arg(long, value_name = "N")]
    pub max_concurrent: Option<u32>,
    /// Time between the starts of one caller's recordings [default: 10s; 0s: none]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub min_interval: Option<Duration>,
    /// Total size of the spool; the oldest traces are deleted to stay under it [default: 10G]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub spool_max_bytes: Option<u64>,
    /// Users allowed besides root and the group's members (name or uid; repeatable; replaces the file's list)
    #[arg(long = "allow-user", value_name = "USER")]
    pub allow_users: Vec<String>,
    /// Groups allowed (name or gid; repeatable; replaces the file's list) [default: --group]
    #[arg(long = "allow-group", value_name = "GROUP")]
    pub allow_groups: Vec<String>,
}

/// Requests to a running service.
#[derive(Debug, clap::Subcommand)]
pub enum RecorderAction {
    /// Snapshot a flight recording's last window into the spool (and -o)
    Snapshot(SnapshotArgs),
}

#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    /// The service's socket
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// The flight recording (its id in `started` or `status`) [default: your only one]
    #[arg(long)]
    pub id: Option<u64>,
    /// Also copy the snapshot here (a new file, mode 0600)
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// recorder.toml: every field optional, none unknown.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    socket: Option<PathBuf>,
    group: Option<String>,
    spool: Option<PathBuf>,
    max_duration: Option<String>,
    max_bytes: Option<String>,
    max_concurrent: Option<u32>,
    min_interval: Option<String>,
    spool_max_bytes: Option<String>,
    allow_users: Option<Vec<String>>,
    allow_groups: Option<Vec<String>>,
}

/// The settings in force.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    pub group: String,
    pub spool: PathBuf,
    pub max_duration: Duration,
    pub max_bytes: u64,
    pub max_concurrent: u32,
    pub min_interval: Duration,
    pub spool_max_bytes: u64,
    /// Users (names or uids) allowed besides root.
    pub allow_users: Vec<String>,
    /// Groups (names or gids) whose members are allowed.
    pub allow_groups: Vec<String>,
}

impl Config {
    /// The file (the default one only if it exists) under the flags.
    pub fn resolve(args: RecorderArgs) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG).exists() => read_file(Path::new(DEFAULT_CONFIG))?,
            None => File::default(),
        };
        let setting = |name: &str, flag: Option<Duration>, file: &Option<String>, default| {
            flag.map(Ok)
                .or_else(|| {
                    file.as_deref().map(|s| {
                        humantime::parse_duration(s).map_err(|e| anyhow::anyhow!("{name}: {e}"))
                    })
                })
                .unwrap_or(Ok(default))
        };
        let size = |name: &str, flag: Option<u64>, file: &Option<String>, default| {
            flag.map(Ok)
                .or_else(|| {
                    file.as_deref()
                        .map(|s| parse_size(s).map_err(|e| anyhow::anyhow!("{name}: {e}")))
                })
                .unwrap_or(Ok(default))
        };
        let group = args
            .group
            .or(file.group)
            .unwrap_or_else(|| DEFAULT_GROUP.into());
        let pick = |flag: Vec<String>, file: Option<Vec<String>>| {
            if flag.is_empty() { file } else { Some(flag) }
        };
        let config = Config {
            socket: args
                .socket
                .or(file.socket)
                .unwrap_or_else(|| DEFAULT_SOCKET.into()),
            spool: args
                .spool
                .or(file.spool)
                .unwrap_or_else(|| DEFAULT_SPOOL.into()),
            max_duration: setting(
                "max_duration",
                args.max_duration,
                &file.max_duration,
                Duration::from_secs(300),
            )?,
            max_bytes: size("max_bytes", args.max_bytes, &file.max_bytes, 1 << 30)?,
            max_concurrent: args.max_concurrent.or(file.max_concurrent).unwrap_or(1),
            min_interval: setting(
                "min_interval",
                args.min_interval,
                &file.min_interval,
                Duration::from_secs(10),
            )?,
            spool_max_bytes: size(
                "spool_max_bytes",
                args.spool_max_bytes,
                &file.spool_max_bytes,
                10 << 30,
            )?,
            allow_users: pick(args.allow_users, file.allow_users).unwrap_or_default(),
            allow_groups: pick(args.allow_groups, file.allow_groups)
                .unwrap_or_else(|| vec![group.clone()]),
            group,
        };
        if config.max_duration.is_zero() {
            bail!("max_duration must be more than zero");
        }
        if config.max_concurrent == 0 {
            bail!("max_concurrent must be at least 1");
        }
        if config.spool_max_bytes < config.max_bytes {
            bail!(
                "spool_max_bytes ({}) is below max_bytes ({}): one full trace would not fit",
                config.spool_max_bytes,
                config.max_bytes
            );
        }
        Ok(config)
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_duration_ms: self.max_duration.as_millis() as u64,
            max_bytes: self.max_bytes,
            max_concurrent: self.max_concurrent,
            min_interval_ms: self.min_interval.as_millis() as u64,
            spool_max_bytes: self.spool_max_bytes,
        }
    }
}

fn read_file(path: &Path) -> anyhow::Result<File> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: {}",
            path.display(),
            e.message().lines().next().unwrap_or("invalid")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recorder.toml");
        std::fs::write(
            &path,
            "group = \"perf\"\nmax_duration = \"1m\"\nmax_bytes = \"64M\"\nallow_users = [\"alice\"]\n",
        )
        .unwrap();
        let config = Config::resolve(RecorderArgs {
            config: Some(path.clone()),
            max_duration: Some(Duration::from_secs(5)),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(config.max_duration, Duration::from_secs(5));
        assert_eq!(config.max_bytes, 64 << 20);
        assert_eq!(config.group, "perf");
        assert_eq!(config.allow_groups, ["perf"]);
        assert_eq!(config.allow_users, ["alice"]);

        std::fs::write(&path, "max_bytes = \"lots\"\n").unwrap();
        let e = Config::resolve(RecorderArgs {
            config: Some(path.clone()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("max_bytes"), "{e}");
        std::fs::write(&path, "max_byte = \"1G\"\n").unwrap();
        let e = Config::resolve(RecorderArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
}
