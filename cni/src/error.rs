//! CNI error objects: what a plugin prints on stdout, with a non-zero exit, when it fails.
//! Codes 1-99 are the spec's well-known ones; 100 and up are this plugin's.

use serde::Serialize;

/// A well-known or plugin code (CNI spec, "Error").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 1: the configuration's cniVersion is not one this plugin speaks.
    IncompatibleVersion = 1,
    /// 2: a configuration field this plugin does not support (the message names it).
    UnsupportedField = 2,
    /// 3: the container is unknown or gone: the runtime need not clean anything up.
    UnknownContainer = 3,
    /// 4: a required environment variable is missing or invalid (the message names it).
    InvalidEnvironment = 4,
    /// 5: reading stdin failed.
    IoFailure = 5,
    /// 6: stdin is not the JSON it should be.
    DecodingFailure = 6,
    /// 7: the network configuration is invalid (e.g. it names a tenant that does not exist).
    InvalidConfig = 7,
    /// 11: a transient condition (the agent is not reachable yet, or still registering): the
    /// runtime should try again later.
    TryAgainLater = 11,
    /// 50 (STATUS): the plugin cannot serve ADD requests now.
    NotAvailable = 50,
    /// 100: the agent refused the request; the message is its explanation.
    AgentRefused = 100,
    /// 101 (CHECK): the attachment is not as the previous ADD made it; the message says how.
    CheckFailed = 101,
}

/// A failure, as a CNI error object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", details.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
pub struct CniError {
    /// The code.
    pub code: Code,
    /// A short message.
    pub msg: String,
    /// What exactly, and what to do.
    pub details: Option<String>,
}

impl CniError {
    /// An error with a code, a short message and details.
    pub fn new(code: Code, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError { code, msg: msg.into(), details: Some(details.into()) }
    }

    /// The JSON object the spec prescribes, for `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            details: Option<&'a str>,
        }
        let wire = Wire { cni_version, code: self.code as u32, msg: &self.msg, details: self.details.as_deref() };
        serde_json::to_string(&wire).expect("error objects serialize")
    }
}
