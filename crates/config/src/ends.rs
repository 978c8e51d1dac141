//! The servers a command uses, as values.
//!
//! [`crate::Layers::validate`] checks that every setting a command needs is
//! there, but [`Config`] keeps each endpoint optional, because commands
//! need different ones. These types carry what the check proved: a role's
//! start takes a [`RedisEndpoint`], not an `Option` it would have to check
//! (and word an error for) again.

use crate::settings::{Setting, DEST_URL, KAFKA_BROKERS, SOURCE_URL};
use crate::{Brokers, Config, ConfigError, RedisEndpoint};

/// Kafka and both Redis servers: `run`, `reconcile`, `check`.
#[derive(Debug, Clone)]
pub struct BothSides {
    /// Where Kafka is.
    pub brokers: Brokers,
    /// The source (production).
    pub source: RedisEndpoint,
    /// The destination (staging).
    pub dest: RedisEndpoint,
}

/// Kafka and the source, with the destination when it is set (capture
/// keeps its lease, gap signal and progress there): `capture`, `resync`.
#[derive(Debug, Clone)]
pub struct SourceSide {
    /// Where Kafka is.
    pub brokers: Brokers,
    /// The source (production).
    pub source: RedisEndpoint,
    /// The destination, if set.
    pub dest: Option<RedisEndpoint>,
}

/// Kafka and the destination: `apply`, `replay`.
#[derive(Debug, Clone)]
pub struct DestSide {
    /// Where Kafka is.
    pub brokers: Brokers,
    /// The destination (staging).
    pub dest: RedisEndpoint,
}

/// The error for a setting a command needs and was not given.
pub(crate) fn missing(s: &Setting) -> ConfigError {
    ConfigError::Missing {
        var: s.var(),
        key: s.key,
        doc: s.doc,
    }
}

impl Config {
    /// Where Kafka is, or the error naming `REDMIRROR_KAFKA_BROKERS`.
    pub fn brokers(&self) -> Result<Brokers, ConfigError> {
        self.kafka_brokers.clone().ok_or_else(|| missing(&KAFKA_BROKERS))
    }

    /// The source, or the error naming `REDMIRROR_SOURCE_URL`.
    pub fn source_endpoint(&self) -> Result<RedisEndpoint, ConfigError> {
        self.source.clone().ok_or_else(|| missing(&SOURCE_URL))
    }

    /// The destination, or the error naming `REDMIRROR_DEST_URL`.
    pub fn dest_endpoint(&self) -> Result<RedisEndpoint, ConfigError> {
        self.dest.clone().ok_or_else(|| missing(&DEST_URL))
    }

    /// Kafka and both Redis servers.
    pub fn both_sides(&self) -> Result<BothSides, ConfigError> {
        Ok(BothSides {
            brokers: self.brokers()?,
            source: self.source_endpoint()?,
            dest: self.dest_endpoint()?,
        })
    }

    /// Kafka and the source (and the destination when set).
    pub fn source_side(&self) -> Result<SourceSide, ConfigError> {
        Ok(SourceSide {
            brokers: self.brokers()?,
            source: self.source_endpoint()?,
            dest: self.dest.clone(),
        })
    }

    /// Kafka and the destination.
    pub fn dest_side(&self) -> Result<DestSide, ConfigError> {
        Ok(DestSide {
            brokers: self.brokers()?,
            dest: self.dest_endpoint()?,
        })
    }
}
