//! Serde helpers for tunables that travel as the text an operator types ("8x", "80,443",
//! "cookie"): written with `Display` (or the mode's name), read back with the same parser the
//! command line uses, so a value is valid over the control socket exactly when it is valid as a
//! flag.

use std::{fmt::Display, str::FromStr};

use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
use synguard_common::Mode;

/// A mode by its name (`off`, `monitor`, `cookie`, `auto`).
pub fn parse_mode(text: &str) -> Result<Mode, String> {
    Mode::ALL
        .into_iter()
        .find(|m| m.name() == text)
        .ok_or_else(|| format!("'{text}' is not a mode; use one of: off, monitor, cookie, auto"))
}

pub mod display {
    use super::*;

    pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr<Err = String>,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

pub mod option {
    use super::*;

    pub fn serialize<T: Display, S: Serializer>(
        value: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => s.collect_str(value),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr<Err = String>,
        D: Deserializer<'de>,
    {
        Option::<String>::deserialize(d)?
            .map(|text| text.parse().map_err(D::Error::custom))
            .transpose()
    }
}

pub mod mode {
    use super::*;

    pub fn serialize<S: Serializer>(mode: &Mode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(mode.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
        parse_mode(&String::deserialize(d)?).map_err(D::Error::custom)
    }
}

pub mod option_mode {
    use super::*;

    pub fn serialize<S: Serializer>(mode: &Option<Mode>, s: S) -> Result<S::Ok, S::Error> {
        match mode {
            Some(mode) => s.serialize_str(mode.name()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Mode>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| parse_mode(&text).map_err(D::Error::custom))
            .transpose()
    }
}
