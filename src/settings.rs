//! How settings are declared once: every setting is a field of a typed struct owned by the
//! step it belongs to (`probe::FitOptions`, `surgery::SelectOptions`, …) that derives clap's
//! `Args` (its flag, default and help) and serde (its config-file key). This module holds
//! the three pieces those structs share:
//!
//! - [`defaults`]: a struct's `Default` read from its flag declarations, so that a default
//!   is written once, in the `#[arg(default_value…)]` beside the field;
//! - [`text`]: serde of a value through its `FromStr` / `Display` spelling (`epoch = "9"`,
//!   `layer = "mlp:3"`, `suites = "rtp,ppl,kl"`): config files spell a value as its flag does;
//! - [`overlay`]: applies only the flags given on the command line to settings read from a
//!   file (defaults, then the file, then the flags).

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Command, FromArgMatches};

/// `T` as its flags' defaults give it (every flag absent).
///
/// Panics only when the flag declarations themselves are broken (a required flag, a default
/// its parser refuses): a programming error that every test calling `Default` catches.
pub fn defaults<T: Args + FromArgMatches>() -> T {
    let cmd = T::augment_args(Command::new("defaults").no_binary_name(true));
    let m = cmd
        .try_get_matches_from(std::iter::empty::<String>())
        .expect("settings: every flag has a default");
    T::from_arg_matches(&m).expect("settings: every default parses")
}

/// Updates `target` with the values in `matches` that came from the command line; flags
/// left at their defaults change nothing, so a config file's value stays unless a flag
/// names it.
pub fn overlay<T: FromArgMatches>(target: &mut T, matches: &ArgMatches) -> Result<(), clap::Error> {
    let mut given = matches.clone();
    let ids: Vec<String> = matches.ids().map(|id| id.as_str().to_string()).collect();
    for id in ids {
        if matches.value_source(&id) != Some(ValueSource::CommandLine) {
            // Defaults and groups: not an override. Clearing an id that holds no value is a
            // no-op, and a group id is not an argument (`Err`), which is fine to skip.
            let _ = given.try_clear_id(&id);
        }
    }
    target.update_from_arg_matches(&given)
}

/// Serde through the text spelling of a value (its `Display`, read back with `FromStr`):
/// `#[serde(with = "crate::settings::text")]`.
pub mod text {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    /// Writes the spelling.
    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    /// Reads the spelling, failing with the parser's message.
    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }

    /// The same for an optional value (`None` is written as nothing, read from a missing key).
    pub mod option {
        use super::*;

        /// Writes the spelling of a present value.
        pub fn serialize<T: Display, S: Serializer>(
            v: &Option<T>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => s.collect_str(v),
                None => s.serialize_none(),
            }
        }

        /// Reads the spelling.
        pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
        where
            T: FromStr,
            T::Err: Display,
            D: Deserializer<'de>,
        {
            match Option::<String>::deserialize(d)? {
                Some(s) => s.parse().map(Some).map_err(D::Error::custom),
                None => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Args, Debug, PartialEq)]
    struct Inner {
        /// A number.
        #[arg(long, default_value_t = 3)]
        n: u32,
        /// A switch.
        #[arg(long)]
        on: bool,
        /// An optional word.
        #[arg(long)]
        word: Option<String>,
    }

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        inner: Inner,
    }

    #[test]
    fn defaults_come_from_the_flags_and_overlay_takes_only_given_ones() {
        assert_eq!(
            defaults::<Inner>(),
            Inner {
                n: 3,
                on: false,
                word: None
            }
        );
        let from_file = Inner {
            n: 7,
            on: true,
            word: Some("file".into()),
        };
        // Nothing given: the file's values stay, even where they differ from the defaults.
        let m = <Cli as clap::CommandFactory>::command().get_matches_from(["x"]);
        let mut t = from_file;
        overlay(&mut t, &m).unwrap();
        assert_eq!((t.n, t.on, t.word.as_deref()), (7, true, Some("file")));
        // A flag given at its default value still overrides the file.
        let m = <Cli as clap::CommandFactory>::command().get_matches_from(["x", "--n", "3"]);
        overlay(&mut t, &m).unwrap();
        assert_eq!((t.n, t.on, t.word.as_deref()), (3, true, Some("file")));
    }
}
