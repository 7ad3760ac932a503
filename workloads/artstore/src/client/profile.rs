//! Where the client talks to: flags, then an explicitly chosen `--profile`, then the
//! environment (`ARTSTORE_INGESTER_URL`, `ARTSTORE_QUERY_URL`, `ARTSTORE_TOKEN`), then the
//! default profile of the config file that `artstore login` writes (mode 0600, it holds tokens).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const ENV_INGESTER_URL: &str = "ARTSTORE_INGESTER_URL";
pub const ENV_QUERY_URL: &str = "ARTSTORE_QUERY_URL";
pub const ENV_TOKEN: &str = "ARTSTORE_TOKEN";
/// Overrides the config file's location (tests, several archives side by side).
pub const ENV_CONFIG: &str = "ARTSTORE_CONFIG";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingester_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_profile: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no config directory is known for this user: set {ENV_CONFIG}=PATH")]
    NoConfigDir,
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a valid config file ({source}): fix or remove it, then run `artstore login`"
    )]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("no profile {0:?} in the config file: run `artstore login --profile {0} ...`")]
    UnknownProfile(String),
}

pub fn config_path() -> Result<PathBuf, ConfigError> {
    if let Some(p) = std::env::var_os(ENV_CONFIG).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    dirs::config_dir()
        .map(|d| d.join("artstore").join("config.json"))
        .ok_or(ConfigError::NoConfigDir)
}

impl Config {
    /// The config file, or an empty one when there is none yet.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| ConfigError::Parse {
                path: path.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(ConfigError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Writes atomically, readable by the owner only.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let io = |source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("json.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(io)?;
        // `mode` applies only to a new file; an old temp file keeps its bits otherwise.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
        }
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        file.write_all(&text).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// What the flags said.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub profile: Option<String>,
    pub ingester_url: Option<String>,
    pub query_url: Option<String>,
    pub token: Option<String>,
}

/// Resolves each setting on its own: flag, explicit profile, environment, default profile.
pub fn resolve(
    flags: &Flags,
    config: &Config,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Profile, ConfigError> {
    let chosen = match &flags.profile {
        Some(name) => Some(
            config
                .profiles
                .get(name)
                .cloned()
                .ok_or_else(|| ConfigError::UnknownProfile(name.clone()))?,
        ),
        None => None,
    };
    let default = config
        .default_profile
        .as_ref()
        .and_then(|name| config.profiles.get(name))
        .cloned()
        .unwrap_or_default();
    let env = |key: &str| env(key).filter(|v| !v.trim().is_empty());
    let pick = |flag: &Option<String>,
                from: fn(&Profile) -> &Option<String>,
                key: &str|
     -> Option<String> {
        flag.clone()
            .or_else(|| chosen.as_ref().and_then(|p| from(p).clone()))
            .or_else(|| env(key))
            .or_else(|| from(&default).clone())
    };
    Ok(Profile {
        ingester_url: pick(&flags.ingester_url, |p| &p.ingester_url, ENV_INGESTER_URL),
        query_url: pick(&flags.query_url, |p| &p.query_url, ENV_QUERY_URL),
        token: pick(&flags.token, |p| &p.token, ENV_TOKEN),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(i: &str, q: &str, t: &str) -> Profile {
        Profile {
            ingester_url: Some(i.into()),
            query_url: Some(q.into()),
            token: Some(t.into()),
        }
    }

    #[test]
    fn flags_beat_a_chosen_profile_which_beats_env_which_beats_the_default() {
        let config = Config {
            default_profile: Some("home".into()),
            profiles: BTreeMap::from([
                (
                    "home".into(),
                    profile("http://home:1", "http://home:2", "home-token"),
                ),
                (
                    "work".into(),
                    profile("http://work:1", "http://work:2", "work-token"),
                ),
            ]),
        };
        let env = |k: &str| (k == ENV_TOKEN).then(|| "env-token".to_string());
        let none = resolve(&Flags::default(), &config, env).expect("resolve");
        assert_eq!(none.token.as_deref(), Some("env-token"));
        assert_eq!(none.ingester_url.as_deref(), Some("http://home:1"));
        let work = Flags {
            profile: Some("work".into()),
            query_url: Some("http://flag:2".into()),
            ..Flags::default()
        };
        let chosen = resolve(&work, &config, env).expect("resolve");
        assert_eq!(chosen.token.as_deref(), Some("work-token"));
        assert_eq!(chosen.query_url.as_deref(), Some("http://flag:2"));
        assert!(matches!(
            resolve(
                &Flags {
                    profile: Some("nope".into()),
                    ..Flags::default()
                },
                &config,
                env
            ),
            Err(ConfigError::UnknownProfile(_))
        ));
    }

    #[test]
    fn the_config_file_is_private_and_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested").join("config.json");
        assert_eq!(
            Config::load(&path).expect("missing is empty"),
            Config::default()
        );
        let config = Config {
            default_profile: Some("a".into()),
            profiles: BTreeMap::from([("a".into(), profile("http://i", "http://q", "t"))]),
        };
        config.save(&path).expect("save");
        assert_eq!(Config::load(&path).expect("load"), config);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "{not json").expect("write");
        assert!(matches!(
            Config::load(&path),
            Err(ConfigError::Parse { .. })
        ));
    }
}
