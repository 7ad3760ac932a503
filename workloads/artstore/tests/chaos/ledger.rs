//! The client-side ledger: every request the workload made and the answer it got, and for every
//! file the state the client was told it is in (or, after a change that got no clear answer, the
//! two states it may be in).

use std::collections::BTreeMap;

/// The metadata a client can see change, with the version that goes with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub version: i64,
    pub description: Option<String>,
    pub tags: Vec<String>,
}

impl Meta {
    pub fn from_record(record: &serde_json::Value) -> Option<Meta> {
        Some(Meta {
            version: record["version"].as_i64()?,
            description: record["description"].as_str().map(String::from),
            tags: record["tags"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// What the client may find when it looks again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Live(Meta),
    Gone,
}

/// How a request ended as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 2xx.
    Ok(u16),
    /// An HTTP error answer: status and the body's `code`.
    Error(u16, String),
    /// No answer: connection refused or cut, or the client's own timeout.
    Unanswered,
}

impl Answer {
    pub fn is_ok(&self) -> bool {
        matches!(self, Answer::Ok(_))
    }
}

/// One logical upload (one file name, one content), with every attempt it took.
#[derive(Clone, Debug)]
pub struct Upload {
    pub name: String,
    /// A word only this file's description and name carry, for search.
    pub word: String,
    pub sha256: String,
    pub size: u64,
    pub key: Option<String>,
    pub answers: Vec<Answer>,
    /// From the acknowledging answer.
    pub file_id: Option<String>,
    pub element: Option<String>,
    /// For an acknowledged file: the states it may be in now. One state unless a change got
    /// no clear answer; then the old one and the new one (and the client leaves it alone).
    pub expect: Vec<State>,
}

impl Upload {
    pub fn acknowledged(&self) -> bool {
        self.file_id.is_some()
    }

    /// The client knows exactly what state the file is in.
    pub fn certain(&self) -> Option<&State> {
        match self.expect.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

/// Answers per kind of request.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub ok: u64,
    pub error: u64,
    pub no_answer: u64,
    /// Error answers by `status code`.
    pub codes: BTreeMap<String, u64>,
}

impl Tally {
    pub fn record(&mut self, answer: &Answer) {
        match answer {
            Answer::Ok(_) => self.ok += 1,
            Answer::Error(status, code) => {
                self.error += 1;
                *self.codes.entry(format!("{status} {code}")).or_default() += 1;
            }
            Answer::Unanswered => self.no_answer += 1,
        }
    }

    pub fn merge(&mut self, other: &Tally) {
        self.ok += other.ok;
        self.error += other.error;
        self.no_answer += other.no_answer;
        for (k, v) in &other.codes {
            *self.codes.entry(k.clone()).or_default() += v;
        }
    }
}

/// Everything one client did.
#[derive(Default)]
pub struct ClientLedger {
    pub uploads: Vec<Upload>,
    pub tallies: BTreeMap<&'static str, Tally>,
    /// Things the client saw that are wrong on their face (a download with other bytes, a
    /// replay with another record, a change answered with an unexpected version).
    pub anomalies: Vec<String>,
}

impl ClientLedger {
    pub fn record(&mut self, kind: &'static str, answer: &Answer) {
        self.tallies.entry(kind).or_default().record(answer);
    }
}
