//! Settings plumbing shared by every module's settings struct; imports nothing of this crate.
//!
//! - One source of defaults: a settings struct's clap attributes (`default_value_t`) are its only
//!   defaults; its `impl Default` calls [`defaults`], so tests (which use `Default`) and the binary
//!   (which parses flags) cannot drift apart.
//! - One kind of secret setting: [`Secret`] (`secrecy::SecretString`), parsed by [`secret`], which
//!   prints as `[REDACTED]` in `Debug` and has no `Display`; pair it with `hide_env_values = true`
//!   so `--help` does not print the environment's value either.

use clap::{Args, Command, FromArgMatches};

/// A secret setting (a token, a client secret, a key): never printed, read with
/// `secrecy::ExposeSecret::expose_secret` where it is used.
pub type Secret = secrecy::SecretString;

/// The value parser of secret flags: `#[arg(long, env = "X", hide_env_values = true,
/// value_parser = config::secret)]`.
pub fn secret(value: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::from(value.to_owned()))
}

/// The defaults of a settings struct, read from its clap attributes with no flag given and no
/// environment variable consulted (a test's environment must not change its defaults).
///
/// Panics when `T` has a required flag: a settings struct gives every flag a default.
pub fn defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(Command::new("defaults"))
        .no_binary_name(true)
        .mut_args(|arg| arg.env(None::<&str>));
    let matches = command
        .try_get_matches_from(std::iter::empty::<String>())
        .expect("a settings struct has a default for every flag");
    T::from_arg_matches(&matches).expect("the defaults parse into the settings struct")
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    #[derive(Debug, Args)]
    struct Example {
        /// A word; `PATH` is set in every environment, so a default read from it would show.
        #[arg(long, env = "PATH", default_value = "none")]
        word: String,
        /// A token.
        #[arg(long, env = "CONFIG_TEST_EXAMPLE_TOKEN", hide_env_values = true, value_parser = secret)]
        token: Option<Secret>,
    }

    #[test]
    fn defaults_come_from_the_clap_attributes_not_the_environment() {
        assert!(std::env::var_os("PATH").is_some());
        let example: Example = defaults();
        assert_eq!(example.word, "none");
        assert!(example.token.is_none());
    }

    #[test]
    fn a_secret_setting_never_prints() {
        let token = secret("tok-123").unwrap();
        let example = Example {
            word: "w".into(),
            token: Some(token),
        };
        let printed = format!("{example:?}");
        assert!(!printed.contains("tok-123"), "{printed}");
        assert_eq!(example.token.unwrap().expose_secret(), "tok-123");
    }
}
